#!/usr/bin/env python3
"""A node under load: one simulated camera, N pipelines on its ring, a client per stream.

A real supervisor with a 2560x2160 uint16 camera at 100 Hz; for N = 1, 2, 4 pipelines (default
function, `exclude: ["image"]`), each stream received by a client process. Per N it prints each
pipeline's output rate and drops (ring misses, torn frames, and pulse-id gaps the client saw),
the CPU of every process (psutil) and the CPU ms per frame per pipeline.

    python bench/node_fanout.py [--size 2560x2160] [--rate 100] [--seconds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import signal
import tempfile
import time
from pathlib import Path

import psutil

from shmcam.bsread import Receiver
from shmcam.cli.demo import rest, start_supervisor
from shmcam.cli.ring_demo import parse_size


def client(stream, seconds, step, results):
    """Receive a stream for `seconds`; report messages and pulse ids missing in between."""
    received, gaps, last = 0, 0, None
    with Receiver(stream, timeout=1.0) as receiver:
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            message = receiver.receive()
            if message is None:
                continue
            if last is not None:
                gaps += max(0, (message.pulse_id - last) // step - 1)
            last, received = message.pulse_id, received + 1
    results.put({"stream": stream, "received": received, "gaps": gaps})


def cpu_seconds(pids) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.NoSuchProcess:
            out[pid] = 0.0
    return out


def measure(url, n, seconds, rate, ctx) -> dict:
    pipelines = [
        rest(
            f"{url}/api/v1/pipeline?instance_id=bench{i}",
            "POST",
            {"camera_name": "simulation", "exclude": ["image"], "no_client_timeout": 0},
        )
        for i in range(n)
    ]
    results = ctx.Queue()
    clients = [
        ctx.Process(target=client, args=(p["stream"], seconds + 1, round(100 / rate), results))
        for p in pipelines
    ]
    for c in clients:
        c.start()
    time.sleep(1.0)  # clients connected, warm

    def info(i):
        return rest(f"{url}/api/v1/pipeline/instance/bench{i}/info")["info"]

    camera = next(iter(rest(f"{url}/api/v1/cam/info")["info"]["active_instances"].values()))
    pids = {f"pipeline{i}": info(i)["statistics"]["pid"] for i in range(n)}
    pids["camera"] = camera["statistics"]["pid"]
    pids.update({f"client{i}": c.pid for i, c in enumerate(clients)})
    before_stats = [info(i)["statistics"] for i in range(n)]
    cpu0, t0 = cpu_seconds(pids.values()), time.monotonic()
    time.sleep(seconds)
    cpu1, elapsed = cpu_seconds(pids.values()), time.monotonic() - t0
    after_stats = [info(i)["statistics"] for i in range(n)]
    client_results = {r["stream"]: r for r in (results.get(timeout=30) for _ in clients)}
    for c in clients:
        c.join()
    for i in range(n):
        rest(f"{url}/api/v1/pipeline/bench{i}/del", "DELETE")
    cpu = {name: 100 * (cpu1[pid] - cpu0[pid]) / elapsed for name, pid in pids.items()}
    frames = rate * elapsed
    per_pipeline = []
    for i, p in enumerate(pipelines):

        def delta(key, i=i):
            return after_stats[i][key] - before_stats[i][key]

        out = int(after_stats[i]["tx"].split(" - ")[1]) - int(before_stats[i]["tx"].split(" - ")[1])
        per_pipeline.append(
            {
                "out_hz": out / elapsed,
                "dropped": delta("dropped") + delta("torn"),
                "client_gaps": client_results[p["stream"]]["gaps"],
                "cpu_ms_per_frame": 10 * cpu[f"pipeline{i}"] / (frames / elapsed),
                "processing_ms_p50": after_stats[i]["processing_ms_p50"],
            }
        )
    return {
        "pipelines": n,
        "per_pipeline": per_pipeline,
        "cpu_percent": cpu,
        "cpu_percent_total": sum(cpu.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="2560x2160")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--counts", default="1,2,4", help="numbers of pipelines to run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = parse_size(args.size)
    workdir = Path(tempfile.mkdtemp(prefix="shmcam-bench-"))
    supervisor, url = start_supervisor(workdir, size, args.rate)
    ctx = multiprocessing.get_context("spawn")
    try:
        rest(f"{url}/api/v1/cam/simulation")
        runs = [measure(url, int(n), args.seconds, args.rate, ctx) for n in args.counts.split(",")]
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps({"size": args.size, "rate": args.rate, "runs": runs}))
        return
    print(
        f"camera {args.size} uint16 at {args.rate:g} Hz, {args.seconds:g} s per run, "
        f"{psutil.cpu_count()} cores"
    )
    for run in runs:
        cpu = run["cpu_percent"]
        print(
            f"\n{run['pipelines']} pipeline(s): total CPU {run['cpu_percent_total']:.0f}% "
            f"(camera {cpu['camera']:.0f}%)"
        )
        for i, p in enumerate(run["per_pipeline"]):
            print(
                f"  pipeline{i}: out {p['out_hz']:6.1f} Hz  dropped {p['dropped']:3d}  "
                f"client gaps {p['client_gaps']:3d}  CPU {p['cpu_ms_per_frame']:5.2f} ms/frame"
                f"  processing p50 {p['processing_ms_p50'] or 0:5.2f} ms  "
                f"client CPU {cpu[f'client{i}']:4.1f}%"
            )


if __name__ == "__main__":
    main()
