"""Parallel pipelines (`processing_threads`): the work board and the ordering rules, then real
pipeline processes on a ring this test writes (workers as processes and as threads, a live
update, a killed worker, latest-wins readers), then through a real supervisor (what is
refused, per-worker statistics, fan-out to two workers and fan-in)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from supervisor_harness import SIM_CAMERA, counted, receive, wait_for
from worker_harness import WorkerProcess

from shmcam.bsread import Receiver, Sender
from shmcam.shm import RingReader, RingWriter, StatsBlock, ring_base, stats_name
from shmcam.shm.board import IDLE, Board
from shmcam.sources.simulation import beam_frames
from shmcam.workers import split
from shmcam.workers.reorder import Reorder

# A user function whose every output is derived from its frame and pulse id: it can sleep
# and burn CPU, and says which process computed it.
PROBE = """
import os, time, zlib

parallel_safe = True

def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    time.sleep(parameters.get("sleep_s", 0))
    if pulse_id == parameters.get("fail_at"):
        raise ValueError("no beam in this frame")
    end = time.thread_time() + parameters.get("burn_ms", 0) / 1000
    while time.thread_time() < end:
        pass
    digest = zlib.crc32(image)
    return {
        "digest": digest,
        "value": (digest ^ pulse_id) * parameters.get("gain", 1),
        "worker": os.getpid(),
        "image": image,
    }
"""
SHAPE = (240, 320)  # uint16: 150 KiB, sent by ZMQ without a copy
FIRST_PULSE = 5000


# --- the work board and the order ---------------------------------------------------------
CLAIMER = """
import json, sys
from shmcam.shm.board import Board
board = Board(sys.argv[1])
member = int(sys.argv[2])
print("ready", flush=True)
claims = []
while True:
    claim = board.claim(member, 2.0)
    if claim is None:
        break
    claims.append([claim.ticket, claim.index, claim.skipped])
    board.done(member)
print(json.dumps(claims))
board.close()
"""


def test_members_in_other_processes_never_claim_a_ticket_twice(node):
    members = 3
    with Board(split.board_name(node, "b"), create=True, members=members) as board:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CLAIMER, board.name, str(m)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for m in range(members)
        ]
        try:
            for proc in procs:
                assert proc.stdout.readline().strip() == "ready"
            for ticket in range(3000):
                assert board.post(100 + ticket, 7000 + ticket) == ticket
                if ticket % 50 == 0:
                    time.sleep(0.001)
            wait_for(lambda: board.bound() == board.posted, what="every ticket claimed")
            board.stop()
            claims = [json.loads(proc.communicate(timeout=20)[0]) for proc in procs]
        finally:
            for proc in procs:
                proc.kill()
    taken = sorted(t for mine in claims for t, _, _ in mine)
    skipped = sum(s for mine in claims for _, _, s in mine)
    assert len(taken) == len(set(taken)), "a ticket was claimed twice"
    assert len(taken) + skipped == 3000  # every ticket taken once or skipped once
    assert all(index == 100 + t for mine in claims for t, index, _ in mine)
    for mine in claims:  # each member's claims go forward
        assert [t for t, _, _ in mine] == sorted(t for t, _, _ in mine)


def test_claims_go_in_order_unless_too_far_behind_and_the_bound_waits_for_held_ones(node):
    with Board(split.board_name(node, "b"), create=True, members=2) as board:
        assert board.claim(0, 0.01) is None and board.bound() == 0
        for ticket in range(4):
            board.post(ticket, ticket)
        claim = board.claim(0, 1.0)
        assert (claim.ticket, claim.skipped) == (3, 3)  # 3 behind: the newest, 0..2 skipped
        assert board.bound() == 3  # ticket 3 is held: its result may still come
        board.post(4, 4)
        board.post(5, 5)
        claim = board.claim(1, 1.0)  # one behind the newest: in order
        assert (claim.ticket, claim.skipped) == (4, 0)
        board.done(0)
        assert board.bound() == 4 and board.holding(0) == IDLE
        board.done(1)
        assert board.bound() == 5  # ticket 5 is not claimed yet
        assert board.claim(0, 1.0).ticket == 5


def test_with_a_queue_claims_work_through_the_newest_in_order(node):
    with Board(split.board_name(node, "b"), create=True, members=2) as board:
        for ticket in range(6):
            board.post(ticket, ticket)
        claims = [board.claim(0, 1.0, queue=3) for _ in range(3)]
        assert [(c.ticket, c.skipped) for c in claims] == [(3, 3), (4, 0), (5, 0)]


def test_a_member_writes_a_record_only_once_its_slot_is_released(node):
    with Board(split.board_name(node, "b"), create=True, members=1, record_slots=2) as board:
        assert board.wait_released(0, 1, 0.01)
        assert not board.wait_released(0, 2, 0.05)  # record 0 still held by the collector
        threading.Timer(0.05, board.release, (0, 1)).start()
        assert board.wait_released(0, 2, 5.0)
        board.note_record(0, 2, 41)
        assert board.record_ticket(0, 2) == 41


def test_a_recent_reader_goes_on_in_order_one_behind_and_skips_further_behind(node):
    base = ring_base(node, "cam")
    with (
        RingWriter(base, np.uint16, (2, 2), 8) as writer,
        RingReader(base, policy="recent") as reader,
    ):

        def write(count):
            for _ in range(count):
                n = writer.frames_written
                writer.write(np.full((2, 2), n, np.uint16), 100 + n, (0, n))

        write(2)
        assert [reader.wait(1).pulse_id for _ in range(2)] == [100, 101]  # one behind: in order
        write(4)
        assert reader.wait(1).pulse_id == 105 and reader.missed == 3  # three behind: the newest


def test_results_go_out_in_order_and_the_wait_is_bounded():
    reorder = Reorder(window=3)
    for ticket in (2, 1, 4):
        assert reorder.add(ticket, ticket)
    assert list(reorder.ready(bound=0)) == []  # ticket 0 may still come
    assert list(reorder.ready(bound=3)) == [1, 2]  # 0 never will: 1 and 2 go
    for ticket in (5, 6, 7):
        reorder.add(ticket, ticket)
    assert list(reorder.ready(bound=3)) == [4]  # 3 is given up: 4 of them waited
    assert not reorder.add(3, 3)  # late: refused, the caller counts it dropped
    assert list(reorder.drain()) == [5, 6, 7]


# --- pipeline processes on a ring written here --------------------------------------------
class Run:
    """A pipeline process reading a ring this test writes, with a PULL client of its stream
    (connected before any frame is written, so every result is sent or counted)."""

    def __init__(self, node: str, tmp: Path, config: dict, slots: int = 8):
        scripts = tmp / "scripts"
        scripts.mkdir(exist_ok=True)
        (scripts / "probe.py").write_text(PROBE)
        self.node = node
        self.frames = beam_frames(SHAPE[1], SHAPE[0], count=16)
        self.writer = RingWriter(ring_base(node, "cam"), np.uint16, SHAPE, slots)
        self.written: list[int] = []
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.config = {
            "camera_name": "cam",
            "function": "probe.py",
            "mode": "PUSH",
            "queue_size": 1000,
            **config,
        }
        self.spec = {
            "node": node,
            "instance_id": "par",
            "ring": self.writer.base,
            "input": None,
            "stats": stats_name(node, "p-par"),
            "port": port,
            "preview": None,
            "config": self.config,
            "scripts_dir": str(scripts),
            "backgrounds_dir": str(tmp / "backgrounds"),
        }
        self.worker = WorkerProcess([sys.executable, "-m", "shmcam.workers", "pipeline"], self.spec)
        self.receiver = None
        self.exit_code = 0  # what the instance is expected to end with
        try:
            self.worker.wait_report("ready", 120)
            self.receiver = Receiver(f"tcp://127.0.0.1:{port}", mode="PULL", queue_size=1000)
            wait_for(lambda: self.counters()["clients"] == 1, what="the client connected")
        except BaseException:
            self.close()
            raise

    def counters(self) -> dict:
        with StatsBlock(self.spec["stats"]) as stats:
            return stats.snapshot()

    def taken(self) -> int:
        """Frames the workers have taken (or the pipeline itself, unsplit)."""
        workers = split.parse(self.config).workers
        if workers == 1:
            return self.counters()["frames_in"]
        total = 0
        for k in range(workers):
            with StatsBlock(split.member_stats_name(self.node, "par", k)) as block:
                total += block.snapshot()["frames_in"]
        return total

    def write(self, count: int, rate: float = 100.0, until: threading.Event | None = None) -> None:
        """count more frames at rate (or, with `until`, frames until it is set)."""
        end = len(self.written) + count
        while len(self.written) < end if until is None else not until.is_set():
            i = len(self.written)
            pulse_id = FIRST_PULSE + i
            self.writer.write(self.frames[i % 16], pulse_id, (1_700_000_000, i))
            self.written.append(pulse_id)
            time.sleep(1.0 / rate)

    def frame_of(self, pulse_id: int) -> np.ndarray:
        return self.frames[(pulse_id - FIRST_PULSE) % 16]

    def results(self, count: int | None = None, quiet: float = 1.5) -> list:
        """Messages until `count` came, or the stream was quiet for `quiet` seconds."""
        out = []
        while count is None or len(out) < count:
            message = self.receiver.receive(timeout=quiet)
            if message is None:
                break
            out.append(message)
        return out

    def settle(self) -> dict:
        """The counters once every frame written is accounted for: sent, dropped or torn."""
        n = len(self.written)

        def settled():
            c = self.counters()
            return c if c["frames_out"] + c["dropped"] + c["torn"] == n else None

        return wait_for(settled, timeout=30, what=f"all {n} frames accounted for")

    def update(self, **changes) -> None:
        self.config = {**self.config, **changes}
        self.worker.send({"config": self.config, "seq": 1})
        assert self.worker.wait_report("config_applied") == 1

    def close(self) -> None:
        if self.receiver is not None:
            self.receiver.close()
        try:
            assert self.worker.stop() == self.exit_code, self.worker.log[-20:]
        finally:
            self.writer.close()


@pytest.fixture
def runs(node, tmp_path):
    started: list[Run] = []

    def start(config: dict, **kwargs) -> Run:
        run = Run(node, tmp_path, config, **kwargs)
        started.append(run)
        return run

    yield start
    for run in started:
        run.close()


def probe_module(tmp_path: Path):
    spec = importlib.util.spec_from_file_location("probe_here", tmp_path / "scripts" / "probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_results(run: Run, messages: list, gains=lambda message: 1) -> None:
    """Strictly ordered, nothing but frames written, every value what one call computes on
    that frame, and every frame written sent or counted."""
    pulse_ids = [m.pulse_id for m in messages]
    assert pulse_ids == sorted(set(pulse_ids)), "results out of order or repeated"
    assert set(pulse_ids) <= set(run.written)
    for message in messages:
        frame = run.frame_of(message.pulse_id)
        assert np.array_equal(message.data["image"], frame)
        assert message.data["value"] == (int(message.data["digest"]) ^ message.pulse_id) * gains(
            message
        )
    counters = run.settle()
    assert counters["frames_out"] == len(messages)
    assert len(messages) + counters["dropped"] + counters["torn"] == len(run.written)


@pytest.mark.parametrize("processes", [True, False], ids=["processes", "threads"])
def test_workers_share_frames_and_results_come_out_complete_and_ordered(runs, tmp_path, processes):
    run = runs({"processing_threads": 3, "multiprocessing": processes, "burn_ms": 15})
    run.write(150, rate=100)
    messages = run.results()
    check_results(run, messages)
    probe = probe_module(tmp_path)
    for message in messages[::10]:  # what one call of the function makes of that frame
        alone = probe.process_image(
            run.frame_of(message.pulse_id), message.pulse_id, (0, 0), None, None, {}
        )
        assert alone["value"] == message.data["value"]
    for k in range(3):
        with StatsBlock(split.member_stats_name(run.node, "par", k)) as block:
            assert block.snapshot()["frames_out"] > 0, f"worker {k} got no work"
    if processes:
        assert len({int(m.data["worker"]) for m in messages}) == 3


def test_a_live_update_applies_to_every_worker_from_one_frame_on(runs):
    run = runs({"processing_threads": 2, "multiprocessing": True, "burn_ms": 25})
    run.write(50, rate=50)
    run.update(gain=3)
    run.write(50, rate=50)
    messages = run.results()

    def gain(message):
        return message.data["value"] // (int(message.data["digest"]) ^ message.pulse_id)

    gains = [gain(m) for m in messages]
    assert gains == sorted(gains) and gains[0] == 1 and gains[-1] == 3, gains
    check_results(run, messages, gain)
    after = {int(m.data["worker"]) for m in messages if gain(m) == 3}
    assert after == {int(m.data["worker"]) for m in messages}  # both workers switched


def test_a_killed_worker_is_replaced_and_the_stream_goes_on(runs):
    run = runs({"processing_threads": 2, "multiprocessing": True, "burn_ms": 25})
    board = Board(split.board_name(run.node, "par"), writable=False)
    enough = threading.Event()
    writing = threading.Thread(target=run.write, args=(0, 50, enough))
    writing.start()
    try:
        wait_for(lambda: len(run.written) > 50, what="frames written")
        victim, restarts = board.member_info(0)
        assert restarts == 0
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: board.member_info(0)[1] == 1, what="the worker restarted")
        successor = board.member_info(0)[0]
        assert successor != victim
        wait_for(lambda: board.ready(0), timeout=60, what="the successor ready")
        count = len(run.written)
        wait_for(lambda: len(run.written) > count + 50, what="frames written after")
    finally:
        enough.set()
        writing.join()
        board.close()
    messages = run.results()
    assert successor in {int(m.data["worker"]) for m in messages}
    check_results(run, messages)
    assert any("worker 0 died (signal 9)" in line for line in run.worker.log)


@pytest.mark.parametrize("workers", [1, 2], ids=["one process", "two workers"])
def test_a_reader_that_cannot_keep_up_takes_the_newest_frame(runs, workers):
    """While every worker is busy, frames pile up; the next one free takes the newest and the
    ones passed over are counted, none is processed late."""
    run = runs({"processing_threads": workers, "multiprocessing": True, "sleep_s": 0.5}, slots=16)
    run.write(workers, rate=1000)
    wait_for(lambda: run.taken() == workers, what="every worker busy")
    run.write(5, rate=1000)  # while they sleep
    messages = run.results(count=workers + 1, quiet=10)
    expected = [*run.written[:workers], run.written[-1]]
    assert [m.pulse_id for m in messages] == expected
    counters = run.settle()
    assert counters["dropped"] == 4 and counters["torn"] == 0


def test_thread_buffer_size_queues_frames_for_busy_workers(runs):
    """CamServer's thread_buffer_size, given: frames wait for a free worker and are all
    processed, in order, later; only those beyond the queue are skipped."""
    config = {"processing_threads": 2, "multiprocessing": True, "sleep_s": 0.5}
    run = runs({**config, "thread_buffer_size": 4}, slots=16)
    run.write(2, rate=1000)
    wait_for(lambda: run.taken() == 2, what="both workers busy")
    run.write(6, rate=1000)  # while they sleep: 6 wait, the 2 oldest of them beyond the queue
    messages = run.results(count=6, quiet=10)
    assert [m.pulse_id for m in messages] == [*run.written[:2], *run.written[-4:]]
    counters = run.settle()
    assert counters["dropped"] == 2 and counters["torn"] == 0


@pytest.mark.parametrize("workers", [1, 2], ids=["one process", "two workers"])
def test_processing_that_outlasts_the_ring_copies_frames_instead_of_losing_them(runs, workers):
    """Frames stay 40 ms in this ring, processing takes 150: the first frame is overwritten
    under each worker, and from then on each frame is copied out before it is processed."""
    run = runs({"processing_threads": workers, "multiprocessing": True, "sleep_s": 0.15}, slots=4)
    run.write(100, rate=100)
    messages = run.results()
    check_results(run, messages)
    assert run.counters()["torn"] == workers
    assert len(messages) >= 3 * workers
    assert sum("copied out of the ring first" in line for line in run.worker.log) == workers


def test_a_failing_frame_ends_the_instance_after_the_results_before_it(runs):
    """abort_on_error (the default): the failure of one worker's frame ends the instance
    when that frame's turn comes, as one process would, with the results before it sent."""
    fail_at = FIRST_PULSE + 30
    run = runs({"processing_threads": 2, "multiprocessing": True, "burn_ms": 5, "fail_at": fail_at})
    run.write(60, rate=100)
    error = run.worker.wait_report("error", 30)
    assert f"processing pulse {fail_at} failed: ValueError: no beam in this frame" in error
    assert run.worker.wait(30) == 1
    run.exit_code = 1
    pulse_ids = [m.pulse_id for m in run.results()]
    assert pulse_ids == sorted(set(pulse_ids)) and pulse_ids[-1] < fail_at
    assert len(pulse_ids) >= 20  # the frames before it went out (few dropped at 100 Hz)


def test_a_stream_input_is_shared_out_through_a_relay_ring(node, tmp_path):
    """A stream pipeline's messages are received once, relayed into a record ring the
    workers read in place, and come out complete and in order: a stream is not skipped, its
    messages wait in ZMQ's queue while every worker is busy (a PUSH sender blocks)."""
    sender = Sender("tcp://127.0.0.1:0", mode="PUSH", queue_size=10, block=True)
    port = _free_port()
    spec = {
        "node": node,
        "instance_id": "relay",
        "ring": None,
        "input": {"stream": sender.address, "mode": "PULL"},
        "stats": stats_name(node, "p-relay"),
        "port": port,
        "preview": None,
        "config": {
            "pipeline_type": "stream",
            "input_stream": sender.address,
            "input_mode": "PULL",
            "processing_threads": 2,
            "mode": "PUSH",
            "queue_size": 1000,
        },
        "scripts_dir": str(tmp_path),
        "backgrounds_dir": str(tmp_path),
    }
    worker = WorkerProcess([sys.executable, "-m", "shmcam.workers", "pipeline"], spec)
    try:
        worker.wait_report("ready", 120)
        with Receiver(f"tcp://127.0.0.1:{port}", mode="PULL", queue_size=1000) as receiver:
            wait_for(lambda: sender.clients == 1, what="the pipeline connected")
            for i in range(200):
                sender.send(
                    {"n": i, "wave": np.arange(i, i + 1000, dtype=np.float64)}, 100 + i, (0, i)
                )
            messages = [receiver.receive(timeout=10) for _ in range(200)]
    finally:
        sender.close()
        assert worker.stop() == 0, worker.log[-20:]
    assert [m.pulse_id for m in messages] == list(range(100, 300))
    assert all(m.data["n"] == i and m.data["wave"][0] == i for i, m in enumerate(messages))


# --- through a supervisor -----------------------------------------------------------------
def refusal(sup, config) -> str:
    return sup.call("POST", "/api/v1/pipeline", json=config, expect=400)["status"]


def test_what_cannot_be_split_is_refused_with_the_reason(supervisor):
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    base = {"camera_name": "sim", "processing_threads": 2}
    assert "averaging 3 keeps the mean" in refusal(sup, {**base, "averaging": 3})
    assert "image_averaging 4" in refusal(sup, {**base, "image_averaging": 4})
    assert "function 'psss' keeps state" in refusal(sup, {**base, "function": "psss"})
    assert "processing_manager" in refusal(sup, {**base, "processing_manager": True})
    assert "spawn_send_thread" in refusal(sup, {**base, "spawn_send_thread": False})
    assert "processing_threads must be" in refusal(sup, {**base, "processing_threads": -1})
    assert "bsread_address: frames joined" in refusal(
        sup, {**base, "bsread_address": "tcp://127.0.0.1:9999"}
    )
    assert "remove buffer_size" in refusal(sup, {**base, "buffer_size": 10})
    assert "PULL (a fanin binds" in refusal(
        sup,
        {"pipeline_type": "fanin", "input_stream": "tcp://*:19999", "input_mode": "SUB"},
    )
    assert "custom pipeline" in refusal(
        sup, {"pipeline_type": "custom", "function": "x", "processing_threads": 2}
    )
    sup.call(
        "PUT",
        "/api/v1/pipeline/script/counter.py/script_bytes",
        data=b"n = 0\ndef process_image(image, *args):\n    return {}\n",
    )
    assert "does not declare" in refusal(sup, {**base, "function": "counter.py"})
    assert sup.call("GET", "/api/v1/pipeline/info")["info"]["active_instances"] == {}


def test_a_split_pipeline_reports_its_workers(supervisor):
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    created = sup.call(
        "POST",
        "/api/v1/pipeline",
        json={"camera_name": "sim", "processing_threads": 2, "multiprocessing": True},
    )
    instance = created["instance_id"]

    def workers():
        stats = sup.call("GET", f"/api/v1/pipeline/instance/{instance}/info")["info"]["statistics"]
        return stats["workers"] if all(w["results"] for w in stats["workers"] or ()) else None

    found = wait_for(workers, timeout=30, what="both workers at work")
    assert [w["worker"] for w in found] == [0, 1]
    assert all(w["pid"] and w["restarts"] == 0 for w in found)
    assert found[0]["pid"] != found[1]["pid"]
    assert all(w["processing_ms_p50"] > 0 for w in found)
    metrics = requests.get(f"{sup.url}/metrics", timeout=10).text
    assert (
        f'shmcam_worker_results_total{{node="{sup.node}",kind="pipeline",instance="{instance}",worker="1"}}'
        in metrics
    )
    refused = sup.call(
        "POST",
        f"/api/v1/pipeline/instance/{instance}/config",
        json={"processing_threads": 3},
        expect=400,
    )
    assert "workers are set up at start" in refused["status"]


def test_fanout_to_two_workers_and_fanin_delivers_every_pulse_id_in_order(supervisor):
    fanin_port = wait_for(_free_port, what="a free port")
    sup = supervisor(
        cameras={"sim": {**SIM_CAMERA, "frame_rate": 20}},
        pipelines={
            "spread": {"pipeline_type": "fanout", "camera_name": "sim", "block": True},
            "gather": {
                "pipeline_type": "fanin",
                "input_stream": f"tcp://127.0.0.1:{fanin_port}",
                "pid_buffer": 40,
            },
            "work": {
                "camera_name": "sim",
                "input_pipeline": "spread",
                "input_mode": "PULL",
                "output_pipeline": "gather",
                "function": "minimal",
                "block": True,  # CamServer's default: wait for the fanin, never drop
            },
        },
    )
    gather = sup.call("POST", "/api/v1/pipeline/gather", params={"instance_id": "gather"})["stream"]
    for worker in ("w1", "w2"):
        sup.call("POST", "/api/v1/pipeline/work", params={"instance_id": worker})

    wait_for(
        lambda: counted(sup.call, "w1") and counted(sup.call, "w2"),
        timeout=30,
        what="both workers at work",
    )
    with Receiver(gather, timeout=10) as receiver:
        pulse_ids = [receiver.receive().pulse_id for _ in range(60)]
    steps = [b - a for a, b in zip(pulse_ids, pulse_ids[1:])]

    def losses():
        return {
            name: {
                k: v
                for k, v in sup.call("GET", f"/api/v1/pipeline/instance/{name}/info")["info"][
                    "statistics"
                ].items()
                if k in ("dropped", "torn", "errors", "rx", "tx")
            }
            for name in ("spread", "w1", "w2", "gather")
        }

    assert set(steps) == {5}, f"pulse ids missing or out of order: {steps}, {losses()}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_cascade_reads_a_split_pipelines_results(supervisor):
    """A split pipeline writes no record ring: a cascade of it on the node reads its stream."""
    split_config = {"camera_name": "sim", "function": "minimal", "processing_threads": 2}
    sup = supervisor(cameras={"sim": SIM_CAMERA}, pipelines={"split": split_config})
    down = sup.call(
        "POST",
        "/api/v1/pipeline",
        params={"instance_id": "down"},
        json={"pipeline_type": "stream", "input_pipeline": "split", "no_client_timeout": 0},
    )
    messages = receive(down["stream"], 3)
    assert all("intensity" in m.data for m in messages)
