#!/usr/bin/env python3
"""Fan one camera's frames out to N local readers: shared-memory ring vs ZMQ PUB/SUB (ipc).

Both paths run in the same invocation with the same frames, rate and reader work (the sum of
one image row), so the figures compare side by side. Every process measures its own CPU time
over the measured period only.

    python bench/ring_fanout.py --size 2560x2160 --readers 4 --seconds 5 --rate 100 [--json]

Figures: write_ms (median ingest copy per frame); reader_overhead_us (median CPU per frame of
wait + view + validate, excluding the reader's work, including the kernel's wake-up of a reader
that slept); wake_latency_p99_ms (frame published -> reader running); fps per reader and dropped
frames for both paths; CPU ms per frame of all processes together for both paths.
For reference, measured in the same run: reader_overhead_ready_us (wait + view + validate when
the frame is already there: the ring code's own cost) and futex_wake_cpu_us (CPU a sleeping
thread spends being woken through a bare futex, no ring code: the platform's floor for any
blocking reader, ZMQ's included).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import threading
import time

import numpy as np

from shmcam.shm import RingReader, RingWriter, futex, remove_all, ring_base
from shmcam.sources.simulation import beam_frames

ZMQ_HWM = 100  # cam_server's camera stream queue size


def percentile(values, q):
    return float(np.percentile(values, q)) if len(values) else float("nan")


def paced(rate: float, seconds: float):
    """Yield frame numbers on an absolute schedule; never bursts to catch up."""
    period, t_end = 1.0 / rate, time.monotonic() + seconds
    due, n = time.monotonic(), 0
    while due < t_end:
        yield n
        n += 1
        due += period
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            due = time.monotonic()


def row_sum(image) -> int:
    return int(image[image.shape[0] // 2].sum())


def futex_wake_cpu_us(rounds: int = 200) -> float:
    """Median CPU a thread spends per wake-up from a futex sleep (the platform's floor)."""
    word = np.zeros(1, np.uint32)
    address, costs, ready = word.ctypes.data, [], threading.Event()

    def sleeper():
        for _ in range(rounds):
            seen = int(word[0])
            ready.set()
            c0 = time.thread_time_ns()
            while int(word[0]) == seen:
                futex.wait(address, seen, 1.0)
            costs.append(time.thread_time_ns() - c0)

    thread = threading.Thread(target=sleeper)
    thread.start()
    for _ in range(rounds):
        ready.wait()
        ready.clear()
        time.sleep(0.002)
        word[0] += 1
        futex.wake(address)
    thread.join()
    return statistics.median(costs) / 1e3


def ready_overhead_us(size, rounds: int = 500) -> float:
    """Median CPU of wait + view + validate when the frame is already in the ring."""
    base = ring_base(f"bench{os.getpid()}", "ready")
    frame = beam_frames(*size, count=1)[0]
    costs = []
    with RingWriter(base, frame.dtype, frame.shape, 4) as ring, RingReader(base) as reader:
        for n in range(rounds):
            ring.write(frame, n, (0, 0))
            c0 = time.thread_time_ns()
            reader.validate(reader.wait(0))
            costs.append(time.thread_time_ns() - c0)
    return statistics.median(costs) / 1e3


# --- shared-memory ring -------------------------------------------------------------------------


def shm_writer(base, size, rate, seconds, slots, barrier, results):
    frames = beam_frames(*size, count=4)
    with RingWriter(base, frames[0].dtype, frames[0].shape, slots) as ring:
        barrier.wait()
        barrier.wait()  # readers attached
        durations = []
        cpu0 = time.process_time()
        for n in paced(rate, seconds):
            t0 = time.perf_counter_ns()
            ring.write(frames[n % len(frames)], n, divmod(time.time_ns(), 10**9))
            durations.append(time.perf_counter_ns() - t0)
        cpu = time.process_time() - cpu0
        barrier.wait()  # readers done before the ring goes away
    results.put(
        {
            "role": "writer",
            "sent": len(durations),
            "cpu": cpu,
            "write_ms": statistics.median(durations) / 1e6,
        }
    )


def shm_reader(base, seconds, barrier, results):
    barrier.wait()
    ring = RingReader(base, timeout=10)
    barrier.wait()
    overhead, latency, done = [], [], 0
    cpu0, t_end = time.process_time(), time.monotonic() + seconds + 0.5
    while time.monotonic() < t_end:
        c0 = time.thread_time_ns()
        frame = ring.wait(timeout=0.2)
        woke = time.monotonic_ns()
        c1 = time.thread_time_ns()
        if frame is None:
            continue
        row_sum(frame.image)
        c2 = time.thread_time_ns()
        intact = ring.validate(frame)
        overhead.append((c1 - c0) + (time.thread_time_ns() - c2))
        latency.append(woke - frame.published_ns)
        done += intact
    cpu = time.process_time() - cpu0
    missed, torn = ring.missed, ring.torn
    ring.close()
    barrier.wait()
    results.put(
        {
            "role": "reader",
            "frames": done,
            "dropped": missed + torn,
            "cpu": cpu,
            "overhead_us": statistics.median(overhead) / 1e3 if overhead else float("nan"),
            "latency_ms": [v / 1e6 for v in latency],
        }
    )


# --- ZMQ PUB/SUB over ipc -------------------------------------------------------------------


def zmq_writer(address, size, rate, seconds, readers, ready, results):
    import zmq

    frames = beam_frames(*size, count=4)
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, ZMQ_HWM)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(address)
    while ready.value < readers:  # the slow-joiner handshake
        pub.send_multipart([b"hello", b""])
        time.sleep(0.01)
    sent = 0
    cpu0 = time.process_time()
    for n in paced(rate, seconds):
        pub.send_multipart([n.to_bytes(8, "little"), frames[n % len(frames)]], copy=False)
        sent += 1
    cpu = time.process_time() - cpu0
    for _ in range(50):
        pub.send_multipart([b"end", b""])
        time.sleep(0.01)
    pub.close()
    ctx.term()
    results.put({"role": "writer", "sent": sent, "cpu": cpu})


def zmq_reader(address, shape, seconds, ready, results):
    import zmq

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, ZMQ_HWM)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 200)
    sub.connect(address)
    while True:
        try:
            if sub.recv_multipart()[0] == b"hello":
                break
        except zmq.Again:
            pass
    with ready.get_lock():
        ready.value += 1
    done, cpu0 = 0, None
    t_end = time.monotonic() + seconds + 5
    while time.monotonic() < t_end:
        try:
            head, body = sub.recv_multipart(copy=False)
        except zmq.Again:
            continue
        if head.bytes == b"end":
            break
        if len(head) != 8:
            continue
        if cpu0 is None:
            cpu0 = time.process_time()
        row_sum(np.frombuffer(body.buffer, np.uint16).reshape(shape))
        done += 1
    cpu = time.process_time() - (cpu0 or time.process_time())
    sub.close(linger=0)
    ctx.term()
    results.put({"role": "reader", "frames": done, "cpu": cpu})


def run_all(procs, results):
    """Run a writer and its readers to the end; their reports (writer, [readers])."""
    try:
        for p in procs:
            p.start()
        items = [results.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    writer = next(i for i in items if i["role"] == "writer")
    return writer, [i for i in items if i["role"] == "reader"]


def run_shm(ctx, args, size):
    base = ring_base(f"bench{os.getpid()}", "cam")
    barrier, results = ctx.Barrier(args.readers + 1), ctx.Queue()
    procs = [
        ctx.Process(
            target=shm_writer,
            args=(base, size, args.rate, args.seconds, args.slots, barrier, results),
        )
    ]
    procs += [
        ctx.Process(target=shm_reader, args=(base, args.seconds, barrier, results))
        for _ in range(args.readers)
    ]
    try:
        writer, readers = run_all(procs, results)
    finally:
        remove_all(f"shmcam.bench{os.getpid()}.")
    latency = [v for r in readers for v in r["latency_ms"]]
    cpu = writer["cpu"] + sum(r["cpu"] for r in readers)
    return {
        "write_ms": writer["write_ms"],
        "reader_overhead_us": statistics.median(r["overhead_us"] for r in readers),
        "wake_latency_p50_ms": percentile(latency, 50),
        "wake_latency_p99_ms": percentile(latency, 99),
        "shm_frames_sent": writer["sent"],
        "shm_fps_per_reader": statistics.mean(r["frames"] for r in readers) / args.seconds,
        "shm_dropped": sum(r["dropped"] for r in readers),
        "cpu_ms_per_frame_shm": 1e3 * cpu / writer["sent"],
    }


def run_zmq(ctx, args, size):
    address = f"ipc://{tempfile.gettempdir()}/shmcam-bench-{os.getpid()}.ipc"
    ready, results = ctx.Value("i", 0), ctx.Queue()
    procs = [
        ctx.Process(
            target=zmq_writer,
            args=(address, size, args.rate, args.seconds, args.readers, ready, results),
        )
    ]
    procs += [
        ctx.Process(
            target=zmq_reader, args=(address, (size[1], size[0]), args.seconds, ready, results)
        )
        for _ in range(args.readers)
    ]
    writer, readers = run_all(procs, results)
    cpu = writer["cpu"] + sum(r["cpu"] for r in readers)
    return {
        "zmq_frames_sent": writer["sent"],
        "zmq_fps_per_reader": statistics.mean(r["frames"] for r in readers) / args.seconds,
        # frames the camera produced on schedule that a reader never processed (including the
        # ones the publisher could not even send in time)
        "zmq_dropped": sum(round(args.rate * args.seconds) - r["frames"] for r in readers),
        "cpu_ms_per_frame_zmq": 1e3 * cpu / max(1, writer["sent"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="2560x2160", help="WxH (default 2560x2160)")
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=100.0, help="frames per second")
    parser.add_argument("--slots", type=int, default=8, help="ring depth")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    ctx = multiprocessing.get_context("spawn")
    figures = {
        "size": args.size,
        "readers": args.readers,
        "rate": args.rate,
        "seconds": args.seconds,
        "slots": args.slots,
    }
    figures.update(run_shm(ctx, args, (w, h)))
    figures["reader_overhead_ready_us"] = ready_overhead_us((w, h))
    figures["futex_wake_cpu_us"] = futex_wake_cpu_us()
    figures.update(run_zmq(ctx, args, (w, h)))
    figures["cpu_ratio_zmq_over_shm"] = (
        figures["cpu_ms_per_frame_zmq"] / figures["cpu_ms_per_frame_shm"]
    )
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"{args.readers} readers of {args.size} uint16 at {args.rate:g} Hz for "
        f"{args.seconds:g} s, ring of {args.slots} slots"
    )
    for key, value in figures.items():
        if key not in ("size", "readers", "rate", "seconds", "slots"):
            print(
                f"  {key:26s} {value:10.3f}"
                if isinstance(value, float)
                else f"  {key:26s} {value:10d}"
            )


if __name__ == "__main__":
    main()
