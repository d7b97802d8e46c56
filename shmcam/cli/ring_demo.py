"""`shmcam ring-demo`: a simulated camera writing a ring, and reader processes, live rates.

The data plane alone, without the supervisor: one writer process ingests frames once, N reader
processes each get every frame zero-copy, and every process reports through its shared-memory
statistics block.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import psutil

from shmcam.shm import RingReader, RingWriter, StatsBlock, remove_all, ring_base, stats_name
from shmcam.sources.base import Pacer
from shmcam.sources.simulation import beam_frames

RING = "camera"


def add_parser(commands) -> None:
    p = commands.add_parser(
        "ring-demo", help="a simulated camera ring with reader processes", description=__doc__
    )
    p.add_argument("--size", default="1280x960", help="frame size WxH (default 1280x960)")
    p.add_argument("--rate", type=float, default=100.0, help="frames per second (default 100)")
    p.add_argument("--readers", type=int, default=3, help="reader processes (default 3)")
    p.add_argument("--slots", type=int, default=8, help="ring depth in frames (default 8)")
    p.add_argument(
        "--seconds",
        type=float,
        default=0,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    p.set_defaults(run=run)


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size must look like 1280x960, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise SystemExit(f"--size must be positive, got {text!r}")
    return w, h


def writer_main(node, size, rate, slots, ready, stop) -> None:
    frames = beam_frames(*size, count=16)
    with (
        RingWriter(ring_base(node, RING), frames[0].dtype, frames[0].shape, slots) as ring,
        StatsBlock(stats_name(node, RING), create=True) as stats,
    ):
        ready.set()
        pacer = Pacer(rate)
        n = 0
        while not stop.is_set():
            if not pacer.wait(timeout=0.2):
                continue
            now = time.time_ns()
            ring.write(frames[n % len(frames)], now // 10_000_000, divmod(now, 1_000_000_000))
            stats.add("frames_out")
            n += 1


def reader_main(node, index, stop) -> None:
    name = f"reader{index}"
    with (
        RingReader(ring_base(node, RING), timeout=10) as ring,
        StatsBlock(stats_name(node, name), create=True) as stats,
    ):
        while not stop.is_set():
            frame = ring.wait(timeout=0.2)
            if frame is None:
                continue
            t0 = time.perf_counter_ns()
            row = frame.image[frame.image.shape[0] // 2]
            int(row.sum())  # the "processing": a profile of one row
            if ring.validate(frame):
                stats.add("frames_out")
                stats.record_time(time.perf_counter_ns() - t0)
            stats.add("frames_in")
            stats.set("dropped", ring.missed)
            stats.set("torn", ring.torn)
            stats.set("lag", ring.lag)


def run(args) -> int:
    size = parse_size(args.size)
    if args.readers < 1 or args.rate <= 0:
        raise SystemExit("--readers must be >= 1 and --rate > 0")
    node = f"demo{os.getpid()}"
    ctx = multiprocessing.get_context("spawn")
    stop, ready = ctx.Event(), ctx.Event()
    writer = ctx.Process(
        target=writer_main, args=(node, size, args.rate, args.slots, ready, stop), name="writer"
    )
    procs = [writer]
    # Ctrl-C goes to the whole process group; let the children stop through the event instead.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        writer.start()
        procs += [
            ctx.Process(target=reader_main, args=(node, i, stop), name=f"reader{i}")
            for i in range(args.readers)
        ]
        signal.signal(signal.SIGINT, previous)
        if not ready.wait(60):
            raise SystemExit("the writer did not start (see the log above)")
        for p in procs[1:]:
            p.start()
        print(
            f"ring {ring_base(node, RING)}: {size[0]}x{size[1]} uint16 at {args.rate:g} Hz, "
            f"{args.readers} readers (Ctrl-C to stop)",
            flush=True,
        )
        monitor(node, procs, args.seconds)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop.set()
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
        leftovers = remove_all(f"shmcam.{node}.")
        signal.signal(signal.SIGINT, previous)
    print(f"stopped; removed {len(leftovers)} leftover segments" if leftovers else "stopped")
    return 0


def monitor(node: str, procs, seconds: float) -> None:
    """Print one status line a second from the statistics blocks."""
    names = [RING] + [f"reader{i}" for i in range(len(procs) - 1)]
    blocks = {}
    cpu = {p.pid: psutil.Process(p.pid) for p in procs}
    for proc in cpu.values():
        proc.cpu_percent()
    last, t_last = {}, time.monotonic()
    t_end = time.monotonic() + seconds if seconds > 0 else float("inf")
    while time.monotonic() < t_end and all(p.is_alive() for p in procs):
        time.sleep(min(1.0, max(0.0, t_end - time.monotonic())))
        now = time.monotonic()
        parts = []
        for name in names:
            if name not in blocks:
                try:
                    blocks[name] = StatsBlock(stats_name(node, name))
                except FileNotFoundError:
                    continue
            snap = blocks[name].snapshot()
            if name in last:
                rate = (snap["frames_out"] - last[name]) / (now - t_last)
                parts.append(
                    f"{name} {rate:6.1f} fps"
                    + ("" if name == RING else f" missed {snap['dropped']} torn {snap['torn']}")
                )
            last[name] = snap["frames_out"]
        t_last = now
        load = sum(p.cpu_percent() for p in cpu.values())
        if parts:
            print(" | ".join(parts) + f" | cpu {load:5.1f}%", flush=True)
    for block in blocks.values():
        block.close()
