#!/usr/bin/env python3
"""Writing frames into a FILE mode file: direct chunk writes against the HDF5 filter path.

For 640x480, 1280x960 and 2560x2160 uint16 simulated beam frames, on one core, the median ms
per frame of five ways to append a frame to a dataset (one frame per chunk), side by side in
the same run:
- `raw direct`: a frame written uncompressed as its chunk (CamServerFile, CamServer's DEFAULT
  layout as shmcam writes it);
- `blob direct`: a bsread bitshuffle_lz4 part written as it arrived (StoreFile, stream input);
- `compress direct`: a frame compressed into the chunk format, then written (StoreFile, ring);
- `filter`: the frame written through h5py, the bitshuffle filter compressing it;
- `decode + filter`: a bsread part decompressed, then written through the filter (what a
  store would do without write_direct_chunk).
Files go to a temporary directory (--dir, default /tmp), and are removed.

Usage: python bench/store.py [--frames 20] [--dir /tmp] [--json]
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # one core: before bitshuffle is imported

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from shmcam.bsread import Compressed  # noqa: E402
from shmcam.bsread.compression import BITSHUFFLE_LZ4, compress, decompress  # noqa: E402
from shmcam.sources.simulation import beam_frames  # noqa: E402
from shmcam.workers.h5file import BITSHUFFLE, CamServerFile, StoreFile  # noqa: E402

SIZES = ((640, 480), (1280, 960), (2560, 2160))


def store_file_ms(path: Path, values: list, frames: int, raw: bool = False) -> float:
    """Median ms of prepare + write of one record holding only the image."""
    durations = []
    store = CamServerFile(path, "DEFAULT", {}, localtime=False) if raw else StoreFile(path, {})
    try:
        for n in range(frames):
            t0 = time.perf_counter_ns()
            store.write(store.prepare(n, (0, 0), {"image": values[n % len(values)]}))
            durations.append(time.perf_counter_ns() - t0)
    finally:
        store.close("bench")
    return statistics.median(durations) / 1e6


def filter_ms(path: Path, images: list, frames: int, like: np.ndarray, decode=None) -> float:
    """Median ms of appending one frame (shaped like `like`) through the filter, after
    `decode` if given."""
    shape, dtype = like.shape, like.dtype
    durations = []
    with h5py.File(path, "w") as f:
        data = f.create_dataset(
            "image", (0, *shape), dtype, maxshape=(None, *shape), chunks=(1, *shape), **BITSHUFFLE
        )
        for n in range(frames):
            item = images[n % len(images)]
            t0 = time.perf_counter_ns()
            image = decode(item) if decode else item
            data.resize(n + 1, axis=0)
            data[n] = image
            durations.append(time.perf_counter_ns() - t0)
    return statistics.median(durations) / 1e6


def measure(size: tuple[int, int], frames: int, folder: Path) -> dict:
    images = beam_frames(*size, count=8)
    parts = [memoryview(compress(image, BITSHUFFLE_LZ4)) for image in images]
    blobs = [
        Compressed(part, BITSHUFFLE_LZ4, image.dtype, image.shape)
        for part, image in zip(parts, images)
    ]

    def decode(part):
        return np.frombuffer(
            decompress(part, BITSHUFFLE_LZ4, 2, images[0].nbytes), images[0].dtype
        ).reshape(images[0].shape)

    result = {
        "raw direct": store_file_ms(folder / "raw.h5", images, frames, raw=True),
        "blob direct": store_file_ms(folder / "blob.h5", blobs, frames),
        "compress direct": store_file_ms(folder / "compress.h5", images, frames),
        "filter": filter_ms(folder / "filter.h5", images, frames, images[0]),
        "decode + filter": filter_ms(folder / "decode.h5", parts, frames, images[0], decode),
    }
    result["ratio"] = images[0].nbytes / statistics.mean(len(p) for p in parts)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--dir", default="/tmp")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for size in SIZES:
            results[f"{size[0]}x{size[1]}"] = measure(size, args.frames, Path(folder))
            for path in Path(folder).iterdir():
                path.unlink()
    if args.json:
        print(json.dumps(results))
        return
    print(
        f"{'frame':>10} {'raw direct':>11} {'blob direct':>12} {'compress direct':>16} "
        f"{'filter':>8} {'decode + filter':>16} {'ratio':>6}   (median ms per frame, one core)"
    )
    for name, r in results.items():
        print(
            f"{name:>10} {r['raw direct']:11.2f} {r['blob direct']:12.2f} "
            f"{r['compress direct']:16.2f} {r['filter']:8.2f} {r['decode + filter']:16.2f} "
            f"{r['ratio']:6.2f}"
        )


if __name__ == "__main__":
    main()
