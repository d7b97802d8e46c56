#!/usr/bin/env python3
"""Parallel pipelines: shmcam's workers against CamServer's way of sharing work out.

A real supervisor with a simulated uint16 camera at 100 Hz (1280x960, then 2560x2160) and a
function costing about 15 ms of CPU per frame that releases the GIL (a numpy sort of part of
the image, then CRCs of all of it, as in issue 15; calibrated on this machine first),
returning a few values (with --image, the image too). For each way of
running it, a client process receives the stream for --seconds and reports the output rate,
the pulse ids it missed (drops), whether the stream was in order, and the latency from the
frame's timestamp (taken when the camera produced it) to the result's arrival, p50 and p99;
psutil gives the CPU of every process of the pipeline, per frame sent.

- shmcam: one process (N = 1); `processing_threads` N with `multiprocessing` (processes),
  also with a `thread_buffer_size` queue (queued), and without (threads); and fan-out on
  one node: a fanout pipeline pushing the frames to N worker pipelines, which push their
  results to a fanin (`pipeline_type` fanout / fanin);
- CamServer's way, rebuilt here from its description (docs/spec/camserver.md 3.2): a process
  reads the camera's ring, copies each frame and puts it with the parameters dict into the
  least loaded of N `multiprocessing.Queue(thread_buffer_size)`s (both pickled per frame), N
  worker processes put their results into one queue, and a send process puts them back in
  the received order (`send_buffer_size`) and publishes them; and its threads mode, the same
  with threads and `queue.Queue`. It reads the ring instead of a ZMQ stream: that favours it.

    python bench/parallel.py [--sizes 1280x960,2560x2160] [--counts 1,2,4] [--seconds 6]
                             [--modes ...] [--image] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from shmcam.bsread import Receiver, Sender
from shmcam.cli.demo import rest, start_supervisor
from shmcam.cli.ring_demo import parse_size
from shmcam.shm import RecordWriter, RingReader, create_record_ring, remove_ring, ring_base
from shmcam.shm.board import Board
from shmcam.sources.simulation import beam_frames
from shmcam.workers import split
from shmcam.workers.collector import Collector, RecordInbox

FUNCTION = '''
import zlib

import numpy as np

parallel_safe = True


def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    """About 15 ms of CPU that releases the GIL: a sort of part of the image, a CRC of all of
    it, and more CRC rounds over 256 KiB of it (in the core's cache: the cost does not depend
    on how many workers share the memory bus)."""
    flat = image.reshape(-1)
    part = np.sort(flat[:65536].astype(np.float32))
    digest = zlib.crc32(image)
    for _ in range(parameters["crc_rounds"]):
        digest = zlib.crc32(flat[:131072], digest)
    result = {"digest": digest, "median": float(part[len(part) // 2]), "pulse": pulse_id}
    if parameters.get("send_image"):
        result["image"] = image
    return result
'''
MODES = (
    "shmcam-processes",
    "shmcam-queued",  # processes, with a thread_buffer_size queue (QUEUED frames)
    "shmcam-threads",
    "shmcam-fan",
    "camserver-processes",
    "camserver-threads",
)
TARGET_MS = 15.0
WARM = 1.0  # seconds a stream runs before it is measured
THREAD_BUFFER, SEND_BUFFER = 20, 40  # CamServer's defaults
QUEUED = 4  # frames that wait for a free worker in shmcam-queued (half the ring's 8 slots)
# A CamServer pipeline config's parameters, pickled with every frame in its multiprocessing mode.
PARAMETERS = {
    "camera_name": "simulation",
    "pipeline_type": "processing",
    "function": "bench_function",
    "image_background": None,
    "image_background_enable": False,
    "image_threshold": None,
    "image_region_of_interest": None,
    "image_good_region": {"threshold": 0.3, "gfscale": 1.8},
    "image_slices": {"number_of_slices": 5, "scale": 2, "orientation": "vertical"},
    "rotation": {"angle": 0, "order": 1, "mode": "0.0"},
    "averaging": None,
    "mode": "PUB",
    "queue_size": 10,
    "no_client_timeout": 0,
    "processing_threads": 2,
    "multiprocessing": True,
    "thread_buffer_size": THREAD_BUFFER,
    "send_buffer_size": SEND_BUFFER,
    **{f"extra_{i}": f"value {i}" for i in range(20)},
}


def load_function(path: Path):
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace["process_image"]


def calibrate(size, function) -> tuple[int, float]:
    """How many CRC rounds make the function cost about TARGET_MS of CPU on this machine,
    and what it then costs (ms)."""
    image = beam_frames(*size, count=1)[0]  # what the simulated camera sends

    def cost(rounds: int) -> float:
        t0 = time.thread_time()
        for _ in range(5):
            function(image, 0, (0, 0), None, None, {"crc_rounds": rounds})
        return (time.thread_time() - t0) / 5 * 1000

    base = cost(0)
    per_round = (cost(100) - base) / 100
    rounds = max(0, round((TARGET_MS - base) / per_round))
    return rounds, cost(rounds)


# --- the client ---------------------------------------------------------------------------
def client(stream, seconds, step, results, ready):
    """Receive for `seconds` once the stream runs (its first message, then WARM seconds):
    messages, pulse ids missing, order, latency."""
    latencies, received, gaps, disorder, last = [], 0, 0, 0, None
    with Receiver(stream, timeout=60.0, queue_size=1000) as receiver:
        receiver.receive()
        ready.set()
        t_start = time.monotonic() + WARM
        while time.monotonic() < t_start:
            receiver.receive(timeout=WARM)
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            message = receiver.receive(timeout=1.0)
            if message is None:
                continue
            now = time.time()
            sec, ns = message.global_timestamp
            latencies.append(now - sec - ns / 1e9)
            if last is not None:
                if message.pulse_id <= last:
                    disorder += 1
                else:
                    gaps += (message.pulse_id - last) // step - 1
            last, received = message.pulse_id, received + 1
    lat = np.array(latencies or [np.nan]) * 1000
    results.put(
        {
            "received": received,
            "gaps": gaps,
            "disorder": disorder,
            "latency_ms_p50": float(np.percentile(lat, 50)),
            "latency_ms_p99": float(np.percentile(lat, 99)),
        }
    )


def cpu_seconds(pids) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def family(pid: int) -> list[int]:
    try:
        process = psutil.Process(pid)
        return [pid, *(c.pid for c in process.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def measure(stream, pids_of, seconds, ctx, main_pid=None) -> dict:
    results, ready = ctx.Queue(), ctx.Event()
    receiver = ctx.Process(target=client, args=(stream, seconds, 1, results, ready))
    receiver.start()
    if not ready.wait(60):
        raise SystemExit(f"{stream} sent nothing within 60 s")
    time.sleep(WARM)
    pids = pids_of()
    cpu0, main0, t0 = cpu_seconds(pids), cpu_seconds([main_pid] if main_pid else []), time.time()
    result = results.get(timeout=seconds + 30)
    elapsed = time.time() - t0
    cpu1, main1 = cpu_seconds(pids), cpu_seconds([main_pid] if main_pid else [])
    receiver.join()
    frames = max(1, result["received"])
    result.update(
        out_hz=result["received"] / seconds,
        cpu_percent=100 * (cpu1 - cpu0) / elapsed,
        cpu_ms_per_frame=1000 * (cpu1 - cpu0) / frames * seconds / elapsed,
        main_cpu_ms_per_frame=(
            1000 * (main1 - main0) / frames * seconds / elapsed if main_pid else None
        ),
    )
    return result


# --- shmcam ---------------------------------------------------------------------------------
def run_shmcam(url, function_path, rounds, workers, processes, send_image, seconds, ctx, queue):
    config = {
        "camera_name": "simulation",
        "function": str(function_path),
        "crc_rounds": rounds,
        "send_image": send_image,
        "processing_threads": workers if workers > 1 else 0,
        "multiprocessing": processes,
        **({"thread_buffer_size": queue} if queue else {}),
        "queue_size": 100,
        "no_client_timeout": 0,
    }
    created = rest(f"{url}/api/v1/pipeline?instance_id=bench", "POST", config)
    pid = rest(f"{url}/api/v1/pipeline/instance/bench/info")["info"]["statistics"]["pid"]
    try:
        return measure(created["stream"], lambda: family(pid), seconds, ctx, main_pid=pid)
    finally:
        rest(f"{url}/api/v1/pipeline/bench/del", "DELETE")


def run_fan(url, function_path, rounds, workers, send_image, seconds, ctx):
    """fanout -> N worker pipelines -> fanin, all on this node."""
    port = free_port()
    configs = {
        "spread": {"pipeline_type": "fanout", "camera_name": "simulation"},
        "gather": {
            "pipeline_type": "fanin",
            "input_stream": f"tcp://127.0.0.1:{port}",
            "pid_buffer": 2 * workers + 1,  # results of N workers arrive at most N apart
        },
        "work": {
            "camera_name": "simulation",
            "input_pipeline": "spread",
            "input_mode": "PULL",
            "output_pipeline": "gather",
            "function": str(function_path),
            "crc_rounds": rounds,
            "send_image": send_image,
        },
    }
    for name, config in configs.items():
        rest(f"{url}/api/v1/pipeline/{name}/config", "POST", {**config, "no_client_timeout": 0})
    gather = rest(f"{url}/api/v1/pipeline/gather?instance_id=gather", "POST")
    names = ["gather", *(f"work{i}" for i in range(workers))]
    for name in names[1:]:
        rest(f"{url}/api/v1/pipeline/work?instance_id={name}", "POST")
    names.append("spread")

    def pids():
        info = (rest(f"{url}/api/v1/pipeline/instance/{n}/info")["info"] for n in names)
        return [i["statistics"]["pid"] for i in info]

    try:
        return measure(gather["stream"], pids, seconds, ctx)
    finally:
        for name in names:
            rest(f"{url}/api/v1/pipeline/{name}/del", "DELETE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- CamServer's way ------------------------------------------------------------------------
def cs_worker(inbox, outbox, function_path):
    function = load_function(function_path)
    while True:
        image, pulse_id, timestamp, parameters = inbox.get()
        outbox.put(
            (pulse_id, timestamp, function(image, pulse_id, timestamp, None, None, parameters))
        )


def cs_sender(results, order, port):
    """Results back in the received order; a missing head is dropped when the buffer is
    full (CamServer's send_buffer_size)."""
    held: dict[int, tuple] = {}
    expected: list[int] = []
    with Sender(port, mode="PUB", queue_size=100) as sender:
        while True:
            try:
                while True:
                    expected.append(order.get_nowait())
            except queue.Empty:
                pass
            try:
                pulse_id, timestamp, data = results.get(timeout=0.05)
                held[pulse_id] = (timestamp, data)
            except queue.Empty:
                pass
            while expected:
                head = expected[0]
                if head in held:
                    timestamp, data = held.pop(head)
                    sender.send(data, head, timestamp)
                elif len(held) >= SEND_BUFFER:
                    held.pop(head, None)
                else:
                    break
                expected.pop(0)


def cs_main(ring, workers, threads_mode, function_path, rounds, send_image, port):
    """CamServer's receive loop: a copy of each frame, with the parameters, to the least
    loaded worker queue; the oldest waiting frame dropped when a queue is full. Runs until
    it is killed, with its workers and sender."""
    if threads_mode:
        inboxes = [queue.Queue(THREAD_BUFFER) for _ in range(workers)]
        results, order = queue.Queue(), queue.Queue()
        make = threading.Thread
    else:
        ctx = multiprocessing.get_context("spawn")
        inboxes = [ctx.Queue(THREAD_BUFFER) for _ in range(workers)]
        results, order = ctx.Queue(SEND_BUFFER), ctx.Queue()
        make = ctx.Process
    parameters = {**PARAMETERS, "crc_rounds": rounds, "send_image": send_image}
    parts = [make(target=cs_worker, args=(inbox, results, function_path)) for inbox in inboxes]
    parts.append(make(target=cs_sender, args=(results, order, port)))
    for part in parts:
        part.daemon = True
        part.start()
    reader = RingReader(ring, timeout=10)
    turn = 0
    while True:
        frame = reader.wait(timeout=0.2)
        if frame is None:
            continue
        image = np.array(frame.image)  # received: its own copy
        if not reader.validate(frame):
            continue
        loads = [inbox.qsize() for inbox in inboxes]
        least = min(loads)
        choice = next(
            i for i in [*range(turn, workers), *range(turn)] if loads[i] == least
        )  # round robin among the least loaded
        turn = (choice + 1) % workers
        inbox = inboxes[choice]
        if inbox.full():
            try:
                inbox.get_nowait()
            except queue.Empty:
                pass
        order.put(frame.pulse_id)
        inbox.put((image, frame.pulse_id, frame.timestamp, parameters))


def run_camserver(ring, function_path, rounds, workers, threads_mode, send_image, seconds, ctx):
    port = free_port()
    main = ctx.Process(
        target=cs_main,
        args=(ring, workers, threads_mode, function_path, rounds, send_image, port),
    )
    main.start()
    try:
        return measure(f"tcp://127.0.0.1:{port}", lambda: family(main.pid), seconds, ctx)
    finally:  # killed: a process exits only once its queues' feeders flushed, which never come
        for pid in family(main.pid):
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        main.join(10)


# --- the cost of sharing out and ordering, per frame ------------------------------------------
def ordering_cost(items: int = 20000) -> dict:
    """CPU per frame of each step the parallel machinery adds, with the real classes in one
    thread: the dispatcher's post, a worker's claim and done, and the collector's part (the
    bound, reading the result record in place, putting it in order, releasing it), for the
    bench function's result (three scalars)."""
    node = f"bench{os.getpid()}"
    spec = {"node": node, "instance_id": "o"}
    board = Board(split.board_name(node, "o"), create=True, members=2, record_slots=8)
    writers, inboxes = [], []
    for member in range(2):
        create_record_ring(split.results_base(node, "o", member), 8)
        writers.append(RecordWriter(split.results_base(node, "o", member)))
        inboxes.append(RecordInbox(spec, board, member))
    collector = Collector(board, inboxes, None, SEND_BUFFER, zero_copy=True)
    result = {"digest": 1234, "median": 99.5, "pulse": 0}
    cost = {"post": 0.0, "claim_and_done": 0.0, "collect": 0.0}
    try:
        for ticket in range(items):
            member = ticket % 2
            t0 = time.thread_time()
            board.post(ticket, ticket)
            t1 = time.thread_time()
            claim = board.claim(member, 1.0)
            board.note_record(member, writers[member].records_written, claim.ticket)
            t2 = time.thread_time()
            writers[member].write(ticket, (0, 0), {**result, "pulse": ticket})
            t3 = time.thread_time()
            board.done(member)
            for ready in collector.ready():
                ready.release()
            t4 = time.thread_time()
            cost["post"] += t1 - t0
            cost["claim_and_done"] += t2 - t1
            cost["collect"] += t4 - t3
    finally:
        collector.close()
        for member, writer in enumerate(writers):
            writer.close()
            remove_ring(split.results_base(node, "o", member))
        board.close()
    return {step: 1e6 * seconds / items for step, seconds in cost.items()}


# --- main -----------------------------------------------------------------------------------
def bench_size(size, args, ctx) -> list[dict]:
    workdir = Path(tempfile.mkdtemp(prefix="shmcam-bench-"))
    functions = workdir / "functions"
    functions.mkdir()
    function_path = functions / "bench_function.py"
    function_path.write_text(FUNCTION)
    rounds, cost = calibrate(size, load_function(function_path))
    if not args.json:
        print(f"  the function: {rounds} CRC rounds, {cost:.1f} ms of CPU per frame", flush=True)
    supervisor, url = start_supervisor(
        workdir, size, args.rate, f'function_dirs = ["{functions}"]\n'
    )
    runs = []
    try:
        rest(f"{url}/api/v1/cam/simulation")
        ring = ring_base(f"demo{os.getpid()}", "simulation")
        for mode in args.modes.split(","):
            for n in (int(c) for c in args.counts.split(",")):
                if n == 1 and mode != "shmcam-processes":
                    continue  # one process is one process
                if mode == "shmcam-fan":
                    result = run_fan(url, function_path, rounds, n, args.image, args.seconds, ctx)
                elif mode.startswith("shmcam"):
                    result = run_shmcam(
                        url, function_path, rounds, n, not mode.endswith("threads"), args.image,
                        args.seconds, ctx, QUEUED if mode == "shmcam-queued" else 0,
                    )  # fmt: skip
                else:
                    result = run_camserver(
                        ring, function_path, rounds, n, mode.endswith("threads"), args.image,
                        args.seconds, ctx,
                    )  # fmt: skip
                result.update(mode="shmcam-one" if n == 1 else mode, workers=n)
                runs.append(result)
                if not args.json:
                    show(result)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)
    return runs


def show(r: dict) -> None:
    main = r["main_cpu_ms_per_frame"]
    print(
        f"  {r['mode']:20s} N={r['workers']}  out {r['out_hz']:6.1f} Hz  missed {r['gaps']:4d}"
        f"  order {'ok' if not r['disorder'] else 'BROKEN'}  latency p50 "
        f"{r['latency_ms_p50']:6.1f} ms p99 {r['latency_ms_p99']:6.1f} ms  CPU "
        f"{r['cpu_percent']:4.0f}% = {r['cpu_ms_per_frame']:5.1f} ms/frame"
        + (f" (pipeline process {main:4.2f})" if main is not None else ""),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1280x960,2560x2160")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--counts", default="1,2,4")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--image", action="store_true", help="results carry the image too")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    report = {"ordering_us_per_frame": ordering_cost()}
    if not args.json:
        print(
            "sharing out and ordering, CPU per frame: "
            + ", ".join(f"{k} {v:.1f} µs" for k, v in report["ordering_us_per_frame"].items()),
            flush=True,
        )
    for text in args.sizes.split(","):
        if not args.json:
            print(
                f"camera {text} uint16 at {args.rate:g} Hz, a ~{TARGET_MS:g} ms function"
                f"{' returning the image' if args.image else ''}, {psutil.cpu_count()} cores, "
                f"load {psutil.getloadavg()[0]:.1f}",
                flush=True,
            )
        report[text] = bench_size(parse_size(text), args, ctx)
    if args.json:
        json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
