#!/usr/bin/env python3
"""External pipelines and cascades on a real node, at 2560x2160 uint16.

1. The C example (examples/external/projections.c, gcc -O3) as an external pipeline on a
   simulated camera at 100 Hz: output rate, pulse ids a client missed, the program's drops and
   torn frames, its processing time, and the CPU per frame of the program and of the shmcam
   process publishing its output ring.
2. A cascade with the image in the upstream's output: `up` (the `minimal` function on the
   camera, its image kept in its output) read by `down` (`minimal` again, image excluded from
   its own output), either in place from up's record ring (`input_pipeline`) or over loopback
   ZMQ from up's bsread stream (`input_stream`), one after the other at the same frame rate.
   CPU per frame of down, and of up, side by side.

    python bench/external.py [--seconds 10] [--rate 100] [--cascade-rate 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
from node_fanout import client, cpu_seconds

from shmcam.cli.demo import rest, start_supervisor

ROOT = Path(__file__).resolve().parents[1]
SIZE = (2560, 2160)


def build(workdir: Path) -> Path:
    exe = workdir / "bin" / "projections"
    exe.parent.mkdir()
    source = ROOT / "examples" / "external" / "projections.c"
    subprocess.run(["gcc", "-O3", "-I", str(ROOT / "include"), str(source), "-o", str(exe)])
    return exe


def info(url: str, instance: str) -> dict:
    return rest(f"{url}/api/v1/pipeline/instance/{instance}/info")["info"]


def frames(statistics: dict, key: str = "rx") -> int:
    return int(statistics[key].split(" - ")[1])


def window(url: str, instance: str, pids: dict, seconds: float):
    """An instance's statistics before and after `seconds`, the CPU seconds each process
    (by name) used meanwhile, and the time elapsed."""
    before, cpu0, t0 = (
        info(url, instance)["statistics"],
        cpu_seconds(pids.values()),
        time.monotonic(),
    )
    time.sleep(seconds)
    after, cpu1 = info(url, instance)["statistics"], cpu_seconds(pids.values())
    elapsed = time.monotonic() - t0
    return before, after, {name: cpu1[pid] - cpu0[pid] for name, pid in pids.items()}, elapsed


def camera_at(url: str, rate: float) -> None:
    """The simulated camera at `rate` (restarted with it), and running."""
    config = rest(f"{url}/api/v1/cam/simulation/config")["config"]
    rest(f"{url}/api/v1/cam/simulation/config", "POST", {**config, "frame_rate": rate})
    rest(f"{url}/api/v1/cam/simulation")


def c_example(url: str, exe: Path, seconds: float, rate: float, ctx) -> dict:
    camera_at(url, rate)
    answer = rest(
        f"{url}/api/v1/pipeline?instance_id=proj",
        "POST",
        {"pipeline_type": "external", "executable": str(exe), "camera_name": "simulation",
         "threshold": 100, "no_client_timeout": 0},
    )  # fmt: skip
    results = ctx.Queue()
    receiver = ctx.Process(target=client, args=(answer["stream"], seconds + 2, 1, results))
    receiver.start()
    time.sleep(2.0)  # the client connected, the program warm
    host = psutil.Process(info(url, "proj")["statistics"]["pid"])
    pids = {"program": host.children()[0].pid, "shmcam": host.pid}
    before, after, cpu, elapsed = window(url, "proj", pids, seconds)
    received = results.get(timeout=30)
    receiver.join()
    rest(f"{url}/api/v1/pipeline/proj/del", "DELETE")
    count = frames(after) - frames(before)
    return {
        "in_hz": count / elapsed,
        "out_hz": (frames(after, "tx") - frames(before, "tx")) / elapsed,
        "client_gaps": received["gaps"],
        "dropped": after["dropped"] - before["dropped"],
        "torn": after["torn"] - before["torn"],
        "processing_ms_p50": after["processing_ms_p50"],
        "cpu_ms_per_frame": {name: 1000 * used / count for name, used in cpu.items()},
    }


def cascade(url: str, seconds: float, rate: float) -> dict:
    camera_at(url, rate)
    up = rest(
        f"{url}/api/v1/pipeline?instance_id=up",
        "POST",
        {"camera_name": "simulation", "function": "minimal", "no_client_timeout": 0},
    )
    runs = {}
    for path, source in (
        ("record ring", {"input_pipeline": "up"}),
        ("loopback ZMQ", {"input_stream": up["stream"]}),
    ):
        rest(
            f"{url}/api/v1/pipeline?instance_id=down",
            "POST",
            {"function": "minimal", "exclude": ["image"], "no_client_timeout": 0, **source},
        )
        time.sleep(2.0)  # warm
        pids = {name: info(url, name)["statistics"]["pid"] for name in ("down", "up")}
        before, after, cpu, elapsed = window(url, "down", pids, seconds)
        count = frames(after) - frames(before)
        runs[path] = {
            "down_in_hz": count / elapsed,
            "down_dropped": after["dropped"] - before["dropped"] + after["torn"] - before["torn"],
            "cpu_ms_per_frame": {name: 1000 * used / count for name, used in cpu.items()},
        }
        rest(f"{url}/api/v1/pipeline/down/del", "DELETE")
        time.sleep(1.5)  # up stops writing its record ring once nothing reads it
    rest(f"{url}/api/v1/pipeline/up/del", "DELETE")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="camera Hz for the C example")
    parser.add_argument("--cascade-rate", type=float, default=20.0, help="camera Hz, cascade")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="shmcam-bench-"))
    exe = build(workdir)
    settings = (
        f'executable_dirs = ["{exe.parent}"]\nrun_dir = "{workdir / "run"}"\n'
        "allow_anonymous_code = true\n"
    )
    supervisor, url = start_supervisor(workdir, SIZE, args.rate, settings)
    try:
        results = {
            "c_example": c_example(
                url, exe, args.seconds, args.rate, multiprocessing.get_context("spawn")
            ),
            "cascade": cascade(url, args.seconds, args.cascade_rate),
        }
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps({"size": SIZE, "rate": args.rate, **results}))
        return
    c = results["c_example"]
    print(
        f"camera {SIZE[0]}x{SIZE[1]} uint16, {args.seconds:g} s per run, {psutil.cpu_count()} cores"
    )
    print(
        f"\nC example at {args.rate:g} Hz: in {c['in_hz']:.1f} Hz, out {c['out_hz']:.1f} Hz, "
        f"client gaps {c['client_gaps']}, dropped {c['dropped']}, torn {c['torn']}, "
        f"processing p50 {c['processing_ms_p50']:.2f} ms; CPU ms/frame: program "
        f"{c['cpu_ms_per_frame']['program']:.2f}, shmcam publishing "
        f"{c['cpu_ms_per_frame']['shmcam']:.3f}"
    )
    print(f"\ncascade at {args.cascade_rate:g} Hz (image in up's output):")
    for path, run in results["cascade"].items():
        cpu = run["cpu_ms_per_frame"]
        print(
            f"  {path:13s}: down in {run['down_in_hz']:5.1f} Hz, dropped {run['down_dropped']:3d}; "
            f"CPU ms/frame: down {cpu['down']:6.2f}, up {cpu['up']:6.2f}"
        )


if __name__ == "__main__":
    main()
