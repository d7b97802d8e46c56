#!/usr/bin/env python3
"""Standard processing per frame: shmcam's standard function against a plain numpy baseline.

For 640x480, 1280x960 and 2560x2160 uint16 simulated beam frames, on one core: the median ms
per frame of the standard function with the base config ({}) and the full config (threshold,
good region, 5 slices), and, side by side in the same run, of a straightforward numpy
implementation of the base fields it can do without scipy (numpy sums, min/max, moments: no
fits, no widths). Frames are read as a pipeline reads them: read-only views of ring slots,
validated after use; the ring is filled before it is read, so most frames were written
several frames (tens of MB) earlier and are no longer in the caches.

Targets at 2560x2160: base <= 2 ms, full <= 4 ms.

Usage: python bench/processing.py [--rounds 8] [--json]
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # one core: before numpy and numba are imported
os.environ["NUMBA_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from shmcam.processing.standard import StandardProcessing  # noqa: E402
from shmcam.shm import RingReader, RingWriter, ring_base  # noqa: E402
from shmcam.sources.simulation import beam_frames  # noqa: E402

SIZES = ((640, 480), (1280, 960), (2560, 2160))
SLOTS = 8
BATCH = SLOTS - 1  # frames written, then read: a full ring would make the reader jump ahead
CONFIGS = {
    "base": {},
    "full": {
        "image_threshold": 1000,
        "image_good_region": {},
        "image_slices": {"number_of_slices": 5},
    },
}
TARGETS_MS = {("2560x2160", "base"): 2.0, ("2560x2160", "full"): 4.0}


def numpy_base_fields(image, pulse_id, timestamp, x_axis, y_axis, parameters):
    """The baseline: the base fields numpy does in a few lines (profiles, extremes,
    intensity, centre of mass and rms from moments)."""
    x_profile, y_profile = image.sum(axis=0), image.sum(axis=1)
    intensity = x_profile.sum()
    result = {
        "image": image,
        "x_profile": x_profile,
        "y_profile": y_profile,
        "intensity": intensity,
        "min_value": np.nanmin(image),
        "max_value": np.nanmax(image),
    }
    for name, profile, axis in (("x", x_profile, x_axis), ("y", y_profile, y_axis)):
        center = np.dot(profile, axis) / intensity
        result[f"{name}_center_of_mass"] = center
        result[f"{name}_rms"] = np.sqrt(
            abs(np.dot(profile, axis * axis) / intensity - center * center)
        )
    return result


def median_ms(function, config, size, rounds) -> float:
    """Median ms of function over rounds x BATCH frames read from a ring."""
    frames = beam_frames(*size, count=BATCH)
    x_axis, y_axis = np.arange(size[0], dtype=np.float32), np.arange(size[1], dtype=np.float32)
    base = ring_base(f"bench{os.getpid()}", "processing")
    durations = []
    with (
        RingWriter(base, frames[0].dtype, frames[0].shape, SLOTS) as ring,
        RingReader(base) as reader,
    ):
        function(frames[0], 0, (0, 0), x_axis, y_axis, config)  # JIT compilation or cache
        for round_ in range(rounds):
            for n, frame in enumerate(frames):
                ring.write(frame, round_ * BATCH + n, (0, 0))
            for _ in range(BATCH):
                frame = reader.wait(0)
                t0 = time.perf_counter_ns()
                function(frame.image, frame.pulse_id, frame.timestamp, x_axis, y_axis, config)
                durations.append(time.perf_counter_ns() - t0)
                if not reader.validate(frame):
                    raise RuntimeError("a frame was overwritten while it was processed")
    return statistics.median(durations) / 1e6


def run(rounds: int) -> dict:
    rows = []
    for size in SIZES:
        label = f"{size[0]}x{size[1]}"
        baseline = median_ms(numpy_base_fields, {}, size, rounds)
        for name, config in CONFIGS.items():
            standard = median_ms(StandardProcessing(), config, size, rounds)
            target = TARGETS_MS.get((label, name))
            rows.append(
                {
                    "size": label,
                    "config": name,
                    "standard_ms": round(standard, 3),
                    "numpy_base_ms": round(baseline, 3),
                    "numpy_over_standard": round(baseline / standard, 2),
                    "target_ms": target,
                    "met": None if target is None else standard <= target,
                }
            )
    return {
        "rounds": rounds,
        "frames_per_figure": rounds * BATCH,
        "rows": rows,
        "targets_met": all(row["met"] is not False for row in rows),
    }


def print_table(figures: dict) -> None:
    print(
        f"median ms per frame, {figures['frames_per_figure']} frames each, one core "
        f"(numpy baseline: base fields without fits or widths)"
    )
    header = ("size", "config", "standard", "numpy base", "numpy/std", "target")
    print(
        f"{header[0]:<11}{header[1]:<8}{header[2]:>10}{header[3]:>12}{header[4]:>11}{header[5]:>12}"
    )
    for row in figures["rows"]:
        target = (
            ""
            if row["target_ms"] is None
            else f"<= {row['target_ms']:g} {'ok' if row['met'] else 'MISSED'}"
        )
        print(
            f"{row['size']:<11}{row['config']:<8}{row['standard_ms']:>10.3f}"
            f"{row['numpy_base_ms']:>12.3f}{row['numpy_over_standard']:>10.2f}x{target:>12}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=8,
        help=f"times {BATCH} frames are written to the ring and read, per figure",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    figures = run(args.rounds)
    if args.json:
        print(json.dumps(figures))
    else:
        print_table(figures)


if __name__ == "__main__":
    main()
