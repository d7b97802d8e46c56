#!/usr/bin/env python3
"""Camera sources under load: what a camera instance receives and what it costs.

Per source type (simulation, epics, area_detector, bschannel) and frame size, a real camera
instance reads from a real producer (the simulation itself; the caproto test IOC of
tests/ioc.py on 127.0.0.1; a bsread PUB sender in its own process) at rising rates, until the
source no longer sustains the rate (under 95 % of it arrives, or over 1 % is lost). Per rate:
frames/s into the camera, frames lost between producer and ring (gaps in the pulse ids, or in
the IOC's frame counter for the generic EPICS camera, which has none), and the camera
process's CPU ms per frame (source, transforms, ring write). Needs the test extra (caproto).

    python bench/sources.py [--sizes 1280x960,2560x2160] [--rates 10,25,50,100,200]
                            [--sources simulation,epics,area_detector,bschannel] [--seconds 3]
                            [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from camera_harness import CameraProcess  # noqa: E402
from ioc import Ioc  # noqa: E402
from supervisor_harness import free_port_block  # noqa: E402

from shmcam.cli.ring_demo import parse_size  # noqa: E402
from shmcam.shm import segment  # noqa: E402

SOURCES = ("simulation", "epics", "area_detector", "bschannel")
NODE = f"bench{os.getpid()}"


def bsread_producer(address: str, size, rate: float, stop) -> None:
    """A bsread PUB stream of uint16 frames with consecutive pulse ids, at rate."""
    from shmcam.bsread import Sender
    from shmcam.sources.base import Pacer
    from shmcam.sources.simulation import beam_frames

    frames = beam_frames(*size, count=4)
    pacer = Pacer(rate)
    with Sender(address, mode="PUB", queue_size=10) as sender:
        pulse_id = 0
        while not stop.is_set():
            if pacer.wait(0.1):
                sender.send(
                    {"image": frames[pulse_id % 4]}, pulse_id, divmod(time.time_ns(), 1_000_000_000)
                )
                pulse_id += 1


class Producer:
    """Whatever feeds the camera at a rate, and the camera config that reads it."""

    def __init__(self, source: str, size, rate: float):
        self.ioc = self.process = None
        self.env: dict = {}
        self.wrap = None  # the frame counter wraps (IOC frames: 4096)
        self.step = 1
        if source == "simulation":
            self.config = {
                "source_type": "simulation",
                "size_x": size[0],
                "size_y": size[1],
                "frame_rate": rate,
            }
            self.step = max(1, round(100 / rate))
        elif source in ("epics", "area_detector"):
            self.ioc = Ioc(source, "BENCH", *size, rate).start()
            self.env = self.ioc.env
            self.config = {"source_type": source, "source": "BENCH"}
            self.wrap = 4096 if source == "epics" else None
        else:
            port = free_port_block(1)
            self.stop = multiprocessing.get_context("spawn").Event()
            self.process = multiprocessing.get_context("spawn").Process(
                target=bsread_producer, args=(f"tcp://127.0.0.1:{port}", size, rate, self.stop)
            )
            self.process.start()
            self.config = {"source_type": "bschannel", "source": f"tcp://127.0.0.1:{port}"}

    def counter(self, frame) -> int:
        """The producer's number of a frame in the ring."""
        return int(frame.image.flat[0]) if self.wrap else frame.pulse_id // self.step

    def close(self) -> None:
        if self.ioc is not None:
            self.ioc.kill()
        if self.process is not None:
            self.stop.set()
            self.process.join(10)


def measure(source: str, size, rate: float, seconds: float, data_dir: Path) -> dict:
    producer = Producer(source, size, rate)
    camera = None
    try:
        camera = CameraProcess(NODE, f"{source}{rate:g}", producer.config, data_dir, producer.env)
        camera.wait_state(True)
        reader = camera.reader()
        process = psutil.Process(camera.process.pid)
        try:
            reader.wait(5)
            time.sleep(0.5)  # settle
            reader.skip_to_newest()
            before, cpu0, t0 = camera.counters(), _cpu(process), time.monotonic()
            gaps, last = 0, None
            while time.monotonic() - t0 < seconds:
                frame = reader.wait(1.0)
                if frame is None:
                    continue
                number = producer.counter(frame)
                if last is not None:
                    step = number - last
                    gaps += max(0, (step % producer.wrap if producer.wrap else step) - 1)
                last = number
            elapsed = time.monotonic() - t0
            after, cpu1 = camera.counters(), _cpu(process)
        finally:
            reader.close()
    finally:
        if camera is not None:
            camera.stop()
        producer.close()
    frames = after["frames_in"] - before["frames_in"]
    return {
        "source": source,
        "size": f"{size[0]}x{size[1]}",
        "rate": rate,
        "frames": frames,
        "fps": frames / elapsed,
        "lost": gaps,
        "dropped_in_source": after["dropped"] - before["dropped"],
        "cpu_ms_per_frame": 1000 * (cpu1 - cpu0) / frames if frames else None,
    }


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def sustained(row: dict) -> bool:
    return row["fps"] >= 0.95 * row["rate"] and row["lost"] <= 0.01 * row["frames"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1280x960,2560x2160")
    parser.add_argument("--rates", default="10,25,50,100,200")
    parser.add_argument("--sources", default=",".join(SOURCES))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for source in args.sources.split(","):
                for size in map(parse_size, args.sizes.split(",")):
                    for rate in map(float, args.rates.split(",")):
                        row = measure(source, size, rate, args.seconds, Path(tmp))
                        row["sustained"] = sustained(row)
                        rows.append(row)
                        if not args.json:
                            print(_line(row), flush=True)
                        if not row["sustained"]:
                            break
        finally:
            segment.remove_all(f"shmcam.{NODE}.")
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


def _line(row: dict) -> str:
    cpu = row["cpu_ms_per_frame"]
    return (
        f"{row['source']:>13} {row['size']:>9} {row['rate']:6g} Hz: "
        f"{row['fps']:6.1f} frames/s in, {row['lost']:4d} lost, "
        f"{row['dropped_in_source']:3d} dropped in source, "
        f"{'-' if cpu is None else f'{cpu:.2f}':>6} CPU ms/frame"
        f"{'' if row['sustained'] else '  (not sustained)'}"
    )


if __name__ == "__main__":
    sys.exit(main())
