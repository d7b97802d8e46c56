"""External programs through their contract (docs/external.md), run for real: the examples in
examples/external/ (C built with gcc, Python with shmcam.external, Python against the raw
contract, and a program sending its own bsread stream), with the environment the supervisor
gives them; values checked against numpy, live config changes, statistics, SIGTERM, and
nothing left in /dev/shm."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from supervisor_harness import free_port_block

from shmcam import external
from shmcam.bsread import Receiver, Sender
from shmcam.shm import (
    RecordReader,
    RecordWriter,
    RingWriter,
    StatsBlock,
    generations,
    remove_ring,
    ring_base,
    segment,
    stats_name,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "external"
# The raw example must not need shmcam: it runs with the package made unimportable.
WITHOUT_SHMCAM = (
    "import runpy, sys; sys.modules['shmcam'] = None; "
    "runpy.run_path(sys.argv[1], run_name='__main__')"
)


def frame(i: int, shape=(48, 64)) -> np.ndarray:
    """A noisy spot, a little elsewhere in every frame."""
    rng = np.random.default_rng(i)
    y, x = np.indices(shape)
    spot = 3000 * np.exp(-((x - 20 - i) ** 2 + (y - 15 - i % 5) ** 2) / 40.0)
    return (spot + rng.integers(0, 200, shape)).astype(np.uint16)


def projections(image: np.ndarray, threshold: float) -> dict:
    """What every example must send for an image: numpy's own computation."""
    weights = np.clip(image.astype(np.float64) - threshold, 0, None)
    x_profile, y_profile = weights.sum(axis=0), weights.sum(axis=1)
    intensity = weights.sum()
    return {
        "x_profile": x_profile,
        "y_profile": y_profile,
        "intensity": intensity,
        "x_centroid": (x_profile * np.arange(x_profile.size)).sum() / intensity,
        "y_centroid": (y_profile * np.arange(y_profile.size)).sum() / intensity,
        "threshold": float(threshold),
    }


def assert_projections(data: dict, image: np.ndarray, threshold: float) -> None:
    expected = projections(image, threshold)
    assert list(data) == list(expected)
    for name, value in expected.items():  # sums of integers: exact in float64, in any order
        assert np.array_equal(data[name], value), name


def wait_for(condition, what: str, process: subprocess.Popen, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"{what}: the program exited: {process.communicate()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Node:
    """The supervisor's side of one external instance, set up as the supervisor will: a camera
    ring, the instance's output ring, statistics block and config file."""

    def __init__(self, node: str, tmp_path: Path):
        self.node = node
        self.camera = RingWriter(ring_base(node, "cam"), np.uint16, (48, 64), slots=8)
        self.output = external.create_output_ring(node, "proj")
        self.stats = StatsBlock(stats_name(node, "proj"), create=True)
        self.config = tmp_path / "proj.json"
        external.write_config(self.config, {"threshold": 100, "name": "proj"})
        self.process: subprocess.Popen | None = None

    def environment(self, **contract) -> dict:
        if "input_stream" not in contract:
            contract.setdefault("input_ring", self.camera.base)
        contract.setdefault("output_ring", self.output)
        return {
            **os.environ,
            **external.environment(
                self.node, "proj", config=self.config, stats=self.stats.name, **contract
            ),
        }

    def start(self, command: list[str], **contract) -> subprocess.Popen:
        self.process = subprocess.Popen(
            command,
            env=self.environment(**contract),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return self.process

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
        self.camera.close()
        remove_ring(self.output)
        self.stats.close()


@pytest.fixture
def instance(node, tmp_path):
    setup = Node(node, tmp_path)
    yield setup
    setup.close()
    assert segment.list_segments(f"shmcam.{node}.") == []  # nothing left in /dev/shm


def command(kind: str, cc) -> list[str]:
    if kind == "c":
        return [str(cc(EXAMPLES / "projections.c"))]
    if kind == "raw":
        return [sys.executable, "-c", WITHOUT_SHMCAM, str(EXAMPLES / "projections_raw.py")]
    return [sys.executable, str(EXAMPLES / "projections.py")]


@pytest.mark.parametrize("kind", ["c", "python", "raw"])
def test_example_computes_projections_follows_config_and_stops(instance, cc, kind):
    process = instance.start(command(kind, cc))
    # the examples open their input first, then their output: its new generation says ready
    wait_for(lambda: generations(instance.output) == [1], "the program's output ring", process)
    with RecordReader(instance.output) as out:
        images = [frame(i) for i in range(6)]
        for i, image in enumerate(images):
            instance.camera.write(image, 1000 + i, (1_700_000_000, i))
            record = out.wait(10)
            assert (record.pulse_id, record.timestamp) == (1000 + i, (1_700_000_000, i))
            assert_projections(record.data, image, 100)
        # a live update: the very next frame is processed with the new threshold
        external.write_config(instance.config, {"threshold": 1000, "name": "proj"})
        instance.camera.write(images[0], 2000, (1_700_000_001, 0))
        assert_projections(out.wait(10).data, images[0], 1000)
        # the camera changes geometry: the program follows to the new generation
        small = frame(7, shape=(30, 40))
        instance.camera.write(small, 2001, (1_700_000_001, 1))
        record = out.wait(10)
        assert record.pulse_id == 2001 and record.data["x_profile"].shape == (40,)
        assert_projections(record.data, small, 1000)
        assert out.missed == 0 and out.writer_alive()
        stats = instance.stats.snapshot()
        assert stats["frames_in"] == 8 and stats["proc_ns_total"] > 0
        if kind != "raw":  # the raw example keeps to frames_in and processing times
            assert (stats["frame_height"], stats["frame_width"], stats["errors"]) == (30, 40, 0)
            assert stats["proc_ms_p50"] is not None and stats["updated_ns"] > 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0, process.communicate()
        assert not out.writer_alive()  # closed, and left for the supervisor to remove
    assert generations(instance.output) == [1]


def test_python_helper_reads_records_of_an_upstream_ring(instance):
    """A cascade: the input ring is another instance's output records with an `image`."""
    upstream = RecordWriter(ring_base(instance.node, "up", "out"))
    try:
        process = instance.start(
            [sys.executable, str(EXAMPLES / "projections.py")], input_ring=upstream.base
        )
        wait_for(lambda: generations(instance.output) == [1], "the program's output", process)
        with RecordReader(instance.output) as out:
            for i in range(3):
                upstream.write(500 + i, (0, i), {"image": frame(i), "width": 64})
                record = out.wait(10)
                assert record.pulse_id == 500 + i
                assert_projections(record.data, frame(i), 100)
    finally:
        upstream.close()


def test_python_helper_reads_a_bsread_stream(instance):
    with Sender("tcp://127.0.0.1:0") as sender:
        process = instance.start(
            [sys.executable, str(EXAMPLES / "projections.py")], input_stream=sender.address
        )
        wait_for(lambda: generations(instance.output) == [1], "the program's output", process)
        with RecordReader(instance.output) as out:
            record, i = None, 0
            while record is None:  # until the subscription is up (PUB drops before that)
                assert i < 200 and process.poll() is None, "no record from the stream"
                sender.send({"image": frame(i), "other": 1.5}, 700 + i, (5, i))
                record, i = out.wait(0.05), i + 1
            sent = record.pulse_id - 700
            assert record.timestamp == (5, sent)
            assert_projections(record.data, frame(sent), 100)


def test_a_program_sending_its_own_stream(instance):
    port = free_port_block(1)
    process = instance.start(
        [sys.executable, str(EXAMPLES / "stream_sender.py")],
        output_ring=None,
        output_stream=f"tcp://127.0.0.1:{port}",
        output_mode="PUSH",
    )
    with Receiver(f"tcp://127.0.0.1:{port}", mode="PULL", timeout=10) as receiver:
        # frames until the first message arrives: before, the program may not be attached to
        # the camera yet, or have no peer to PUSH to (it drops what it cannot send)
        i, message = 0, None
        while message is None:
            assert i < 500 and process.poll() is None, "no message from the program"
            instance.camera.write(frame(i), 900 + i, (7, i))
            message, i = receiver.receive(timeout=0.05), i + 1
        first = message.pulse_id - 900
        assert_projections(message.data, frame(first), 100)
        for k in range(first + 1, i):  # every later frame arrives, in order (PUSH queues)
            message = receiver.receive()
            assert message.pulse_id == 900 + k
            assert_projections(message.data, frame(k), 100)
    # it counts what it sent itself (shmcam publishes nothing for it), once sent
    wait_for(lambda: instance.stats.snapshot()["frames_out"] == i - first, "frames_out", process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0


def test_config_file_and_config_stream_reach_the_program(instance):
    """In-process: the helper sees a replaced file at once, and the stream's newest update."""
    publisher = external.ConfigPublisher()
    env = instance.environment(output_ring=None, config_stream=publisher.address)
    try:
        with external.Program(env, handle_sigterm=False) as program:
            assert program.config == {"threshold": 100, "name": "proj"}
            external.write_config(instance.config, {"threshold": 7})
            assert program.config == {"threshold": 7}
        with external.Program(env, config_stream=True, handle_sigterm=False) as program:
            assert program.config == {"threshold": 7}  # the file, until an update comes
            deadline = time.monotonic() + 10
            while program.config.get("threshold") != 8:  # PUB drops until subscribed
                assert time.monotonic() < deadline, "no config update arrived"
                publisher.publish({"threshold": 8})
                time.sleep(0.02)
    finally:
        publisher.close()


def test_the_contract_is_checked_on_both_sides(node, tmp_path):
    with pytest.raises(ValueError, match="a ring or a stream, not both"):
        external.environment(node, "x", input_ring="shmcam.n.cam", input_stream="tcp://h:1")
    with pytest.raises(ValueError, match="output mode one of .* not .SUB., .REQ."):
        external.environment(node, "x", output_stream="tcp://*:1", output_mode="REQ")
    with pytest.raises(ValueError, match="invalid instance name"):
        external.environment(node, "a.b")
    with pytest.raises(KeyError, match="SHMCAM_NODE is not set"):
        external.Program({"SHMCAM_INSTANCE": "x"}, handle_sigterm=False)
    env = external.environment(node, "x", input_ring=ring_base(node, "absent"))
    with pytest.raises(FileNotFoundError, match="no ring named"):
        external.Program(env, handle_sigterm=False)
    path = tmp_path / "c.json"
    with pytest.raises(ValueError):
        external.write_config(path, {"threshold": float("nan")})  # strict JSON only
    assert not path.exists() and list(tmp_path.iterdir()) == []
