"""External pipelines (`pipeline_type: external`) on a real supervisor: the programs of
examples/external/ (C built with gcc and run from the node's executable_dirs, Python uploaded
as programs) started, fed, updated, restarted and stopped by the node, their output checked
through bsread clients against numpy; what may start a program and what may not; nothing
left behind (processes, /dev/shm, config files)."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
from supervisor_harness import counted, free_port_block, receive, wait_for
from test_external import EXAMPLES, assert_projections, frame

from shmcam.bsread import Receiver, Sender
from shmcam.shm import RecordReader, ring_base, segment

TOKEN = "s3cret-token"


class Feeder:
    """A bsread stream that a camera of the node reads (PUSH to its PULL: nothing lost once it
    is connected): frame(pulse_id % 10) for every pulse id, at `rate` per second, in a thread,
    while `running`."""

    def __init__(self, rate: float = 50.0):
        self.port = free_port_block(1)
        self.sender = Sender(  # it waits for the camera, never for ever
            f"tcp://127.0.0.1:{self.port}", mode="PUSH", block=True, send_timeout=0.5
        )
        self.rate = rate
        self.running = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def camera(self) -> dict:
        return {
            "source_type": "bschannel",
            "source": f"tcp://127.0.0.1:{self.port}",
            "mode": "PULL",
        }

    def _run(self) -> None:
        pulse_id = 1000
        while not self._stop:
            if not self.running.wait(0.1):
                continue
            image = frame(pulse_id % 10)
            data = {"image": image, "width": 64, "height": 48}
            if self.sender.send(data, pulse_id, (5, pulse_id)):
                pulse_id += 1
                time.sleep(1 / self.rate)

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sender.close()


@pytest.fixture
def feeder():
    feeding = Feeder()
    yield feeding
    feeding.close()


def create(sup, config: dict, expect: int = 200, **params) -> dict:
    return sup.call("POST", "/api/v1/pipeline", json=config, params=params, expect=expect)


def info(sup, instance: str) -> dict:
    return sup.call("GET", f"/api/v1/pipeline/instance/{instance}/info")["info"]


def ended(sup, instance: str) -> dict:
    """How an instance that is no longer running ended (/info forgets it, as CamServer does)."""
    return sup.call("GET", f"/api/v1/pipeline/instance/{instance}/exitcode")


def running(sup, instance: str) -> dict:
    """The instance's info once it runs (a permanent one starts in the background)."""

    def state():
        answer = requests.get(f"{sup.url}/api/v1/pipeline/instance/{instance}/info", timeout=10)
        return answer.ok and answer.json()["info"]["state"] == "running" and answer.json()["info"]

    return wait_for(state, what=f"{instance} running")


def gone(process: psutil.Process) -> bool:
    """Ended (a zombie too: a program whose instance process was killed is reaped by init)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def program_of(sup, instance: str) -> psutil.Process:
    """The program an external instance runs: the one child of its instance process."""
    host = psutil.Process(info(sup, instance)["statistics"]["pid"])
    return wait_for(lambda: host.children() and host.children()[0], what="the program")


def upload_program(sup, name: str, source: Path | bytes) -> None:
    """A Python example as a stored program, run by this interpreter (its #! line)."""
    text = source.read_bytes() if isinstance(source, Path) else source
    body = b"\n".join(line for line in text.splitlines() if not line.startswith(b"#!"))
    program = f"#!{sys.executable}\n".encode() + body
    sup.call("PUT", f"/api/v1/pipeline/program/{name}/program_bytes", data=program)


def received(stream: str, count: int) -> list:
    """Messages of a PUSH stream (every one, in order)."""
    return receive(stream, count, timeout=20.0, mode="PULL")


def check(messages: list, threshold: float | None = None) -> None:
    """Every message is the projections of the frame of its pulse id, at its threshold."""
    for message in messages:
        used = message.data["threshold"]
        assert threshold is None or used == threshold
        assert message.global_timestamp == (5, message.pulse_id)
        assert_projections(message.data, frame(message.pulse_id % 10), used)


def test_a_c_program_from_executable_dirs_runs_updates_restarts_and_stops(
    supervisor, feeder, cc, tmp_path
):
    program = cc(EXAMPLES / "projections.c")
    proj = {
        "pipeline_type": "external",
        "executable": str(program),
        "camera_name": "cam",
        "mode": "PUSH",
        "threshold": 100,
    }
    sup = supervisor(
        cameras={"cam": feeder.camera},
        pipelines={"proj": proj},
        permanent={"proj": "proj"},
        settings={"executable_dirs": [str(program.parent)]},
    )
    feeder.running.set()
    stream = running(sup, "proj")["stream_address"]
    check(received(stream, 20), 100)
    config_file = Path(sup.data_dir).parent / "run" / sup.node / "config" / "proj.json"
    assert json.loads(config_file.read_text()) == proj

    # a live update: the program reads it from its config file from its next frame on
    answer = sup.call("POST", "/api/v1/pipeline/instance/proj/config", json={"threshold": 1000})
    assert answer["config"]["threshold"] == 1000
    assert json.loads(config_file.read_text())["threshold"] == 1000
    with Receiver(stream, mode="PULL", timeout=20) as receiver:
        thresholds = []
        while thresholds[-3:] != [1000] * 3:
            message = receiver.receive()
            check([message])
            thresholds.append(message.data["threshold"])
    assert thresholds == sorted(thresholds)  # never back to the old one
    refused = sup.call(
        "POST", "/api/v1/pipeline/instance/proj/config", json={"args": ["-x"]}, expect=400
    )
    assert "args cannot change on a running instance" in refused["status"]

    # shown like any instance: statistics of the program and of what shmcam publishes
    details = info(sup, "proj")
    statistics = details["statistics"]
    assert statistics["frame_shape"] == "64x48x2" and statistics["errors"] == 0
    assert statistics["total_bytes"] >= 20 * 48 * 64 * 2  # the frames it took
    assert statistics["processing_ms_p50"] > 0 and statistics["dropped"] == 0
    assert details["config"]["threshold"] == 1000 and details["permanent"]
    metrics = requests.get(sup.url + "/metrics", timeout=10).text
    assert f'shmcam_frames_in_total{{node="{sup.node}",kind="pipeline",instance="proj"}}' in metrics
    assert "shmcam_processing_seconds_bucket" in metrics

    # a crash: the permanent instance comes back, on its port, with a new program
    crashed = program_of(sup, "proj")
    crashed.send_signal(signal.SIGSEGV)
    wait_for(lambda: info(sup, "proj")["statistics"]["restarts"] == 1, what="a restart")
    assert "killed by SIGSEGV" in info(sup, "proj")["last_error"]
    running(sup, "proj")
    assert program_of(sup, "proj").pid != crashed.pid and gone(crashed)
    check(received(stream, 5), 1000)  # with the config in force when it crashed

    # stop: program, instance process, output ring and config file all go
    host, last = psutil.Process(info(sup, "proj")["statistics"]["pid"]), program_of(sup, "proj")
    sup.call("DELETE", "/api/v1/pipeline/proj")
    assert gone(host) and gone(last)
    assert segment.list_segments(f"shmcam.{sup.node}.proj.") == []
    assert not config_file.exists()
    assert ended(sup, "proj")["instance_state"] == "ended"


CONFIG_ECHO = b"""
from shmcam.external import Program

with Program(config_stream=True) as program:
    for item in program.inputs():
        program.write(item, {"threshold": float(program.config["threshold"])})
"""


def test_uploaded_python_programs_on_a_stream_with_the_config_stream(supervisor):
    """The helper-module example reads a bsread stream (input_stream) and writes its ring; a
    second program takes its updates from SHMCAM_CONFIG_STREAM rather than the file."""
    sup = supervisor()
    upload_program(sup, "projections.py", EXAMPLES / "projections.py")
    upload_program(sup, "echo", CONFIG_ECHO)
    assert sup.call("GET", "/api/v1/pipeline/program")["programs"] == ["echo", "projections.py"]
    port = free_port_block(1)
    with Sender(f"tcp://127.0.0.1:{port}", mode="PUB") as source:
        stream = f"tcp://127.0.0.1:{port}"
        common = {"pipeline_type": "external", "input_stream": stream, "mode": "PUSH"}
        proj = create(sup, {**common, "executable": "projections.py", "threshold": 50})
        echo = create(sup, {**common, "executable": "echo", "threshold": 1})
        pulse_id = 0

        def feed() -> None:  # PUB: until the programs' subscriptions are up, and on
            nonlocal pulse_id
            pulse_id += 1
            source.send({"image": frame(pulse_id % 10)}, pulse_id, (5, pulse_id))

        with (
            Receiver(proj["stream"], mode="PULL", timeout=0.05) as projections,
            Receiver(echo["stream"], mode="PULL", timeout=0.05) as echoes,
        ):
            got = []
            while len(got) < 10:
                assert pulse_id < 2000, "no projections came"
                feed()
                message = projections.receive()
                got += [message] if message is not None else []
            check(got, 50)
            sup.call(
                "POST", f"/api/v1/pipeline/instance/{echo['instance_id']}/config",
                json={"threshold": 7},
            )  # fmt: skip
            seen = []
            while seen[-1:] != [7.0]:
                assert pulse_id < 4000, f"the update did not arrive: {seen[-5:]}"
                feed()
                message = echoes.receive()
                seen += [message.data["threshold"]] if message is not None else []
            assert set(seen) <= {1.0, 7.0}
    for answer in (proj, echo):
        sup.call("DELETE", f"/api/v1/pipeline/{answer['instance_id']}")
    assert sup.segments() == []


def test_a_program_sending_its_own_stream(supervisor, feeder):
    sup = supervisor(cameras={"cam": feeder.camera})
    upload_program(sup, "projections.py", EXAMPLES / "projections.py")  # it imports this one
    upload_program(sup, "stream_sender.py", EXAMPLES / "stream_sender.py")
    feeder.running.set()
    answer = create(
        sup,
        {
            "pipeline_type": "external",
            "executable": "stream_sender.py",
            "output": "stream",
            "mode": "PUSH",
            "camera_name": "cam",
            "threshold": 10,
            "no_client_timeout": 1,  # shmcam cannot count its clients: never idle
        },
    )
    messages = received(answer["stream"], 10)
    check(messages, 10)
    ids = [m.pulse_id for m in messages]
    assert ids == list(range(ids[0], ids[0] + 10))  # PUSH: every frame, in order
    time.sleep(2)  # beyond no_client_timeout and a few watchdog periods: not stopped as idle
    details = info(sup, answer["instance_id"])
    assert details["state"] == "running"
    assert counted(sup.call, answer["instance_id"], "tx") >= 10  # counted by the program
    assert not [s for s in sup.segments() if s.endswith(".out.g0")]  # no output ring made


def ring_written(sup, instance: str) -> bool:
    """Whether an instance's record ring has a live writer."""
    try:
        with RecordReader(ring_base(sup.node, instance, "out")) as reader:
            return reader.writer_alive()
    except FileNotFoundError:
        return False


def test_cascades_read_record_rings_in_place(supervisor, feeder):
    """beam (processing, on the camera) -> proj (external, input_pipeline beam) -> copy
    (stream, input_pipeline proj): each reads its upstream's record ring, no ZMQ between them;
    beam writes its ring only while it is read, and is not idle while a cascade reads it."""
    sup = supervisor(
        cameras={"cam": feeder.camera},
        pipelines={"beam": {"camera_name": "cam", "no_client_timeout": 1}},
    )
    upload_program(sup, "projections.py", EXAMPLES / "projections.py")
    feeder.running.set()
    proj = create(
        sup,
        {
            "pipeline_type": "external",
            "executable": "projections.py",
            "input_pipeline": "beam",
            "threshold": 0,
            "mode": "PUSH",
        },
    )
    copy = create(
        sup, {"pipeline_type": "stream", "input_pipeline": proj["instance_id"], "mode": "PUSH"}
    )
    assert ring_written(sup, "beam") and ring_written(sup, proj["instance_id"])
    with (
        Receiver(proj["stream"], mode="PULL", timeout=20) as projections,
        Receiver(copy["stream"], mode="PULL", timeout=20) as copies,
    ):
        seen: tuple[dict, dict] = ({}, {})
        while len(seen[0].keys() & seen[1].keys()) < 5:
            assert len(seen[0]) < 500, "the two streams never met"
            for receiver, messages in zip((projections, copies), seen):
                message = receiver.receive()
                messages[message.pulse_id] = message
    check(seen[0].values(), 0)  # the standard function's image is the camera's frame
    for pulse_id in seen[0].keys() & seen[1].keys():  # the stream pipeline passed them on
        for name, value in seen[0][pulse_id].data.items():
            assert np.array_equal(seen[1][pulse_id].data[name], value), name
    beam = info(sup, "beam")
    assert beam["statistics"]["clients"] == 0 and beam["state"] == "running"  # no ZMQ reader
    assert (
        beam["statistics"]["errors"] == 0 and info(sup, copy["instance_id"])["state"] == "running"
    )

    sup.call("DELETE", f"/api/v1/pipeline/{proj['instance_id']}")
    wait_for(lambda: not ring_written(sup, "beam"), what="beam to stop writing its ring")
    wait_for(lambda: ended(sup, "beam")["instance_state"] == "ended", what="beam idle, stopped")
    wait_for(lambda: not [s for s in sup.segments() if ".beam." in s], what="beam's ring gone")


def test_what_may_start_a_program(supervisor, tmp_path, cc):
    """Only stored programs or files in executable_dirs, never a shell string, with the token;
    a refused config starts nothing."""
    allowed, outside, evidence = tmp_path / "bin", tmp_path / "outside", tmp_path / "ran"
    allowed.mkdir()
    outside.mkdir()
    cc(EXAMPLES / "projections.c").rename(allowed / "projections")
    (outside / "evil").write_text(f"#!/bin/sh\ntouch {evidence}\n")
    (outside / "evil").chmod(0o755)
    (allowed / "link").symlink_to(outside / "evil")
    (allowed / "data.txt").write_text("not a program")
    sup = supervisor(
        cameras={"cam": {"source_type": "simulation", "size_x": 64, "size_y": 48}},
        token=TOKEN,
        settings={"executable_dirs": [str(allowed)], "allow_anonymous_code": False},
    )
    base = {"pipeline_type": "external", "camera_name": "cam"}
    for config, error in (
        ({"executable": "/bin/true"}, "outside the folders this node runs executables from"),
        ({"executable": str(allowed / "link")}, "outside the folders"),
        ({"executable": f"{allowed}/../outside/evil"}, "outside the folders"),
        ({"executable": "bin/true"}, "is not an absolute path"),
        ({"executable": "echo hi; reboot"}, "executable must be an uploaded program's name"),
        ({"executable": "missing"}, "neither an uploaded program"),
        ({"executable": str(allowed / "data.txt")}, "is not executable"),
        ({"executable": str(allowed / "projections")}, None),  # (a valid one, for the rest)
        ({"args": "-v"}, "args must be a list of strings"),
        ({"env": {"A B": "1"}}, "env must be an object of variable names to strings"),
        ({"env": {"SHMCAM_STATS": "x"}}, "SHMCAM_ variables are the contract"),
        ({"output": "file"}, "output must be one of ring, stream, none"),
        ({"input_stream2": "tcp://h:1", "input_stream": "tcp://h:2"}, "reads one input"),
        ({"camera_name": "nocam"}, "camera_name 'nocam' is not a camera of this node"),
    ):
        if error is None:
            base = {**base, **config}
            continue
        answer = sup.call("POST", "/api/v1/pipeline", json={**base, **config}, expect=400)
        assert error in answer["status"], (config, answer)
    refused = sup.call(
        "PUT", "/api/v1/pipeline/program/x/program_bytes", data=b"echo hi\n", expect=400
    )
    assert "neither an ELF executable nor a script" in refused["status"]
    for method, path in (
        ("POST", "/api/v1/pipeline"),
        ("POST", "/api/v1/pipeline/ext/config"),
        ("PUT", "/api/v1/pipeline/program/x/program_bytes"),
    ):
        answer = requests.request(method, sup.url + path, json=base, timeout=10)
        assert answer.status_code == 401, (method, path, answer.text)
    assert sup.call("GET", "/api/v1/pipeline/info")["info"]["active_instances"] == {}
    assert sup.segments() == [] and not evidence.exists()
    assert sup.call("GET", "/api/v1/pipeline/program")["programs"] == []
    started = create(sup, {**base, "mode": "PUSH"})  # with the token, from executable_dirs
    assert info(sup, started["instance_id"])["state"] == "running"


HANGING = b"""
import time
from shmcam.external import Program

with Program() as program:
    for item in program.inputs():
        program.write(item, {"pulse": item.pulse_id})
        if program.config.get("hang"):
            time.sleep(3600)
"""


def test_stuck_programs_are_killed_and_idle_ones_are_not(supervisor, feeder):
    """A program waiting for frames is not stuck, however long; one that has frames and does
    nothing is killed after stuck_timeout."""
    sup = supervisor(cameras={"cam": feeder.camera}, settings={"stuck_timeout": 2})
    upload_program(sup, "hanging", HANGING)
    feeder.running.set()
    answer = create(
        sup,
        {
            "pipeline_type": "external",
            "executable": "hanging",
            "camera_name": "cam",
            "no_client_timeout": 0,
        },
    )
    instance = answer["instance_id"]
    wait_for(lambda: counted(sup.call, instance, "rx") > 5, what="frames")
    feeder.running.clear()  # the camera goes silent: the program waits
    time.sleep(5)  # well beyond stuck_timeout and the watchdog's period
    assert info(sup, instance)["state"] == "running"
    sup.call("POST", f"/api/v1/pipeline/instance/{instance}/config", json={"hang": True})
    program = program_of(sup, instance)
    feeder.running.set()  # frames again: the program takes one and hangs
    wait_for(lambda: ended(sup, instance)["instance_state"] == "failed", timeout=30, what="kill")
    assert "no progress for 2 s" in ended(sup, instance)["last_error"]
    assert gone(program)


STUBBORN = b"""
import signal, sys, time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
print("and saying so on stderr", file=sys.stderr, flush=True)
while True:
    time.sleep(1)
"""
# Its address-space limit (KiB), process group and pid, and the signals it ignores (a mask).
FACTS = b"""#!/bin/sh
echo "limit $(ulimit -v) group $(cut -d' ' -f5 /proc/$$/stat) pid $$ $(grep SigIgn /proc/$$/status)"
exec sleep 1000
"""


def test_a_program_that_ignores_sigterm_is_killed_and_its_output_is_logged(supervisor):
    """Also: a program runs with the instance's memory limit, in its own process group, with
    the signal dispositions of a fresh process (nothing ignored)."""
    sup = supervisor(settings={"instance_memory_mb": 1024})
    upload_program(sup, "stubborn", STUBBORN)
    sup.call("PUT", "/api/v1/pipeline/program/facts/program_bytes", data=FACTS)
    config = {"pipeline_type": "external", "output": "none"}
    facts = create(sup, {**config, "executable": "facts"})["instance_id"]
    (line,) = wait_for(
        lambda: [line for line in sup.log_lines(facts) if "stdout: limit" in line],
        what="the facts",
    )
    _, limit, _, group, _, pid, _, ignored = line.split("stdout: ")[1].split()
    # Signals 32 and 33 are glibc's own (NPTL), which no program can set: `make` ignores
    # them, and everything started under it inherits that (the test suite under `make test`).
    glibc_own = (1 << 31) | (1 << 32)
    assert (int(limit), group, int(ignored, 16) & ~glibc_own) == (2**20, pid, 0)
    instance = create(sup, {**config, "executable": "stubborn"})["instance_id"]
    program = program_of(sup, instance)
    lines = wait_for(
        lambda: [line for line in sup.log_lines(instance) if "ignoring SIGTERM" in line],
        what="the program's stdout in the instance log",
    )
    assert "INFO" in lines[0]
    assert any(
        "WARNING" in line and "stderr: and saying so" in line for line in sup.log_lines(instance)
    )
    sup.call("DELETE", f"/api/v1/pipeline/{instance}")  # SIGTERM, ignored; SIGKILL after 4 s
    assert gone(program)
    assert any("did not stop within 4 s: killing it" in line for line in sup.log_lines(instance))
    assert ended(sup, instance)["instance_state"] == "ended"
