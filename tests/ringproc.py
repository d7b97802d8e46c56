"""Writer and reader processes for the ring tests (run as separate interpreters).

Protocol with the test: each process prints "ready" once attached; a writer then waits for
"go" on stdin. At the end a process prints one JSON line with what it saw.
Frame patterns: "ramp" frames hold (ramp + i) so content, order and byte order are all checked;
"flat" frames hold one value per frame, so a frame torn by the writer shows mixed values.
A reader prints "first" when it got its first frame.
With --records, the ring is a record ring and each frame travels as the `image` channel of a
record, with its number as a scalar and its pulse id spelled out as a string.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from shmcam.shm import RecordReader, RecordWriter, RingReader, RingWriter


def parse_shape(text: str) -> tuple[tuple[int, int], np.dtype]:
    dims, _, dtype = text.partition(":")
    h, w = (int(v) for v in dims.split("x"))
    return (h, w), np.dtype(dtype or "u2")


def pattern(kind: str, shape, dtype, i: int) -> np.ndarray:
    if kind == "flat":
        return np.full(shape, i % 251 + 1, dtype)
    ramp = np.arange(shape[0] * shape[1], dtype=np.uint64).reshape(shape)
    return ((ramp + i) % (np.iinfo(dtype).max + 1)).astype(dtype)


def pulse_id(i: int) -> int:
    return 1000 + i


def timestamp(i: int) -> tuple[int, int]:
    return 1_700_000_000 + i // 100, (i % 100) * 10_000_000


def writer(args) -> dict:
    geometries = [parse_shape(s) for s in args.shapes.split(",")]
    per_geometry = args.frames // len(geometries)
    shape, dtype = geometries[0]
    if args.records:  # small slots: the first record makes them grow
        ring = RecordWriter(args.base, args.slots, capacity=1024)
    else:
        ring = RingWriter(args.base, dtype, shape, args.slots)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no go")
    period = 1.0 / args.rate if args.rate else 0.0
    due = time.monotonic()
    generations = [ring.generation]
    for i in range(args.frames):
        shape, dtype = geometries[min(i // per_geometry, len(geometries) - 1)]
        image = pattern(args.pattern, shape, dtype, i)
        if args.records:
            ring.write(
                pulse_id(i), timestamp(i), {"image": image, "i": i, "pulse": str(pulse_id(i))}
            )
        else:
            ring.write(image, pulse_id(i), timestamp(i))
        if ring.generation != generations[-1]:
            generations.append(ring.generation)
        if period:
            due += period
            time.sleep(max(0.0, due - time.monotonic()))
    if args.hold:
        print("held", flush=True)
        sys.stdin.readline()  # keep the ring alive until the test says so
    written = ring.items_written
    ring.close(unlink=not args.keep)
    return {"written": written, "generations": generations}


def reader(args) -> dict:
    kind = RecordReader if args.records else RingReader
    ring = kind(args.base, policy=args.policy, timeout=10)
    print("ready", flush=True)
    seen = {"taken": [], "pulse_ids": [], "shapes": [], "bad_content": 0, "timeouts": 0}
    while len(seen["taken"]) < args.frames and seen["timeouts"] < args.timeouts:
        frame = ring.wait(timeout=args.timeout)
        if frame is None:
            seen["timeouts"] += 1
            continue
        if not seen["taken"]:
            print("first", flush=True)
        seen["taken"].append(frame.index)
        i = frame.pulse_id - 1000
        data = frame.image.copy() if args.pattern == "flat" else frame.image
        if args.delay:
            time.sleep(args.delay)
        if args.pattern == "flat":
            good = bool((data == i % 251 + 1).all())
        else:
            expected = pattern("ramp", frame.image.shape, frame.image.dtype, i)
            good = np.array_equal(frame.image, expected) and frame.timestamp == timestamp(i)
        if args.records:  # scalars and strings are read under the seqlock when taken
            good = good and frame.data["i"] == i and frame.data["pulse"] == str(frame.pulse_id)
        # Only a validated frame's content counts: a torn one must be detected, and dropped.
        if ring.validate(frame):
            seen["bad_content"] += not good
            seen["pulse_ids"].append(frame.pulse_id)
            shape = [*frame.image.shape, frame.image.dtype.str]
            if not seen["shapes"] or seen["shapes"][-1] != shape:
                seen["shapes"].append(shape)
    seen.update(
        missed=ring.missed,
        torn=ring.torn,
        received=ring.received,
        writer_alive=ring.writer_alive(),
        generation=ring.name.rsplit(".g", 1)[1],
    )
    ring.close()
    return seen


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["writer", "reader"])
    p.add_argument("base")
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--rate", type=float, default=0, help="writer: frames/s (0 = flat out)")
    p.add_argument("--shapes", default="48x64", help="writer: HxW[:dtype],... in turn")
    p.add_argument("--slots", type=int, default=8)
    p.add_argument("--pattern", choices=["ramp", "flat"], default="ramp")
    p.add_argument("--hold", action="store_true", help="writer: wait for a line before closing")
    p.add_argument("--keep", action="store_true", help="writer: close without unlinking")
    p.add_argument("--records", action="store_true", help="a record ring instead of frames")
    p.add_argument("--policy", default="sequential")
    p.add_argument("--timeout", type=float, default=1.0, help="reader: wait timeout")
    p.add_argument("--timeouts", type=int, default=3, help="reader: give up after so many")
    p.add_argument("--delay", type=float, default=0.0, help="reader: work time per frame")
    args = p.parse_args()
    print(json.dumps(writer(args) if args.role == "writer" else reader(args)), flush=True)


if __name__ == "__main__":
    main()
