#!/usr/bin/env python3
"""What record rings and the C API cost per item, at 2560x2160 uint16.

- C frame reader (include/shmcam/ring.h, Python camera writing): wait + read + intact check
  per frame, without the reader's work, the camera at 100 Hz; "woken" (the reader sleeps on
  the futex between frames: the platform's wake-up is in it), "queued" (frames already there).
- C record writer (include/shmcam/records.h): a pipeline-like record (two profiles, 6 scalars,
  a string) with and without the image: the whole write, the API's own cost (the same calls
  copying nothing), and a plain memcpy of the same payload (the work any copy costs).
- Python record writer and reader: the standard pipeline's output (profiles, axes, 24
  scalars, processing_parameters) with and without the image: write, the copies alone
  (np.copyto of the arrays), read (wait + the record's dict + validate, records queued).
- A cascade's cost per record with the image: through a record ring (write + read) against
  bsread (encode + decode, sans I/O; and over ZMQ PUSH/PULL ipc in one process), CPU of
  every thread of the process per record.

Target: the C reader's and writer's own cost <= 10 us per frame beyond the work.

Usage: python bench/records.py [--frames 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

from shmcam.bsread import Decoder, Encoder
from shmcam.shm import RecordReader, RecordWriter, RingWriter, remove_all, ring_base

ROOT = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 2160, 2560
NODE = f"bench{os.getpid()}"


def build(tmp: Path) -> Path:
    exe = tmp / "ring_overhead"
    subprocess.run(
        [
            "gcc",
            "-O2",
            "-I",
            str(ROOT / "include"),
            str(ROOT / "bench/c/ring_overhead.c"),
            "-o",
            str(exe),
        ],  # fmt: skip
        check=True,
    )
    return exe


def us(ns_text: str) -> list[float]:
    """'median p99' in ns -> [median, p99] in us."""
    return [int(v) / 1000 for v in ns_text.split()]


def c_frame_reader(exe: Path, frames: int, queued: bool) -> list[float]:
    """The C reader's cost per frame while a Python camera writes at 100 Hz: woken by each
    frame, or finding frames queued (it sleeps 60 ms whenever it caught up)."""
    base = ring_base(NODE, "cam")
    image = np.random.default_rng(0).integers(0, 4096, (HEIGHT, WIDTH), dtype=np.uint16)
    with RingWriter(base, np.uint16, (HEIGHT, WIDTH), slots=8) as camera:
        command = [str(exe), "frames", base, str(frames), str(int(queued))]
        reader = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert reader.stdout.readline().strip() == "ready"
        due = time.monotonic()
        for i in range(frames):
            camera.write(image, i, (0, i))
            due += 0.01
            time.sleep(max(0.0, due - time.monotonic()))
        out, _ = reader.communicate(timeout=60)
    assert reader.returncode == 0, reader.returncode
    return us(out.split("\n")[0])


def c_record_writer(exe: Path, count: int, image: bool) -> dict:
    out = subprocess.run(
        [str(exe), "records", ring_base(NODE, "c", "out"), str(count), str(HEIGHT), str(WIDTH),
         str(int(image))],  # fmt: skip
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    full, api, copy = (us(line) for line in out)
    return {"write_us": full, "api_us": api, "memcpy_us": copy}


def pipeline_output(image: np.ndarray | None) -> dict:
    """A record shaped like the standard pipeline's output."""
    rng = np.random.default_rng(1)
    result = {
        "x_axis": np.arange(WIDTH, dtype=np.float64),
        "y_axis": np.arange(HEIGHT, dtype=np.float64),
        "x_profile": rng.random(WIDTH),
        "y_profile": rng.random(HEIGHT),
        "processing_parameters": json.dumps({"image_threshold": 100, "image_good_region": {}}),
    }
    for k in range(24):
        result[f"scalar_{k}"] = float(k) * 1.5
    if image is not None:
        result["image"] = image
    return result


def median_us(samples: list[int]) -> float:
    return statistics.median(samples) / 1000


def python_records(count: int, image: np.ndarray | None) -> dict:
    base = ring_base(NODE, "py", "out")
    record = pipeline_output(image)
    arrays = [v for v in record.values() if isinstance(v, np.ndarray)]
    scratch = [[np.empty_like(a) for a in arrays] for _ in range(8)]
    writes, copies, reads = [], [], []
    with RecordWriter(base, slots=8) as writer, RecordReader(base) as reader:
        writer.write(0, (0, 0), record)  # the first one lays out the format and grows slots
        reader.wait(0)
        for i in range(count):
            t0 = time.thread_time_ns()
            writer.write(i, (0, i), record)
            t1 = time.thread_time_ns()
            for source, target in zip(arrays, scratch[i % 8]):
                np.copyto(target, source)
            t2 = time.thread_time_ns()
            got = reader.wait(0)
            intact = reader.validate(got)
            t3 = time.thread_time_ns()
            assert got.pulse_id == i and intact
            writes.append(t1 - t0)
            copies.append(t2 - t1)
            reads.append(t3 - t2)
    return {
        "write_us": median_us(writes),
        "copies_us": median_us(copies),
        "read_us": median_us(reads),
    }


def cascade(count: int, image: np.ndarray) -> dict:
    """CPU per record of handing a pipeline's output with its image to a local cascade."""
    record = pipeline_output(image)
    base = ring_base(NODE, "cascade", "out")
    with RecordWriter(base, slots=8) as writer, RecordReader(base) as reader:
        writer.write(0, (0, 0), record)
        reader.wait(0)
        t0 = time.process_time_ns()
        for i in range(count):
            writer.write(i, (0, i), record)
            reader.validate(reader.wait(0))
        ring = (time.process_time_ns() - t0) / count
    encoder, decoder = Encoder(), Decoder()
    t0 = time.process_time_ns()
    for i in range(count):
        decoder.decode(encoder.encode(record, i, (0, i)))
    sans_io = (time.process_time_ns() - t0) / count
    context = zmq.Context()
    with tempfile.TemporaryDirectory() as tmp:
        push, pull = context.socket(zmq.PUSH), context.socket(zmq.PULL)
        push.bind(f"ipc://{tmp}/cascade")
        pull.connect(f"ipc://{tmp}/cascade")
        t0 = time.process_time_ns()
        for i in range(count):
            push.send_multipart(encoder.encode(record, i, (0, i)), copy=False)
            decoder.decode(pull.recv_multipart(copy=False))
        zmq_ipc = (time.process_time_ns() - t0) / count
        push.close(linger=0)
        pull.close(linger=0)
    context.term()
    return {
        "ring_us": ring / 1000,
        "bsread_sans_io_us": sans_io / 1000,
        "bsread_zmq_ipc_us": zmq_ipc / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    image = np.random.default_rng(2).integers(0, 4096, (HEIGHT, WIDTH), dtype=np.uint16)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            exe = build(Path(tmp))
            figures = {
                "c_frame_reader_woken_us": c_frame_reader(exe, args.frames, False),
                "c_frame_reader_queued_us": c_frame_reader(exe, args.frames, True),
                "c_record_writer_with_image": c_record_writer(exe, args.frames, True),
                "c_record_writer_without_image": c_record_writer(exe, 10 * args.frames, False),
            }
        figures["python_records_with_image"] = python_records(args.frames, image)
        figures["python_records_without_image"] = python_records(10 * args.frames, None)
        figures["cascade_with_image"] = cascade(args.frames, image)
    finally:
        remove_all(f"shmcam.{NODE}.")
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{WIDTH}x{HEIGHT} uint16, {args.frames} frames (median, p99 where two figures)")
    for name, value in figures.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    sys.exit(main())
