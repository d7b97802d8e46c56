"""A realistic simulated beam for demos, tests and benchmarks.

Frames are generated once and cycled, so even 2560x2160 at 100 Hz costs almost nothing per
frame: a tilted 2-D Gaussian spot with shot-to-shot jitter and a slow drift, a dark offset,
noise and a few hot pixels, as a camera looking at a beam screen shows.
"""

from __future__ import annotations

import numpy as np


def beam_frames(size_x: int = 1280, size_y: int = 960, dtype="uint16", count: int = 16,
                seed: int = 0) -> list[np.ndarray]:
    """count read-only frames of shape (size_y, size_x)."""
    dtype = np.dtype(dtype)
    top = np.iinfo(dtype).max if dtype.kind in "ui" else 1.0
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size_y, 0:size_x].astype(np.float32)
    hot = (rng.integers(0, size_y, 8), rng.integers(0, size_x, 8))
    frames = []
    for i in range(count):
        drift = 0.05 * np.sin(2 * np.pi * i / count)
        cx = size_x * (0.5 + drift + rng.normal(0, 0.01))
        cy = size_y * (0.5 - drift / 2 + rng.normal(0, 0.01))
        sx, sy, tilt = size_x / 12, size_y / 16, 0.3
        dx, dy = (x - cx) / sx, (y - cy) / sy
        spot = np.exp(-0.5 * (dx * dx + dy * dy - 2 * tilt * dx * dy) / (1 - tilt * tilt))
        amplitude = 0.6 * top * (1 + rng.normal(0, 0.03))
        noise = rng.normal(0.0, 0.004 * top, spot.shape).astype(np.float32)
        image = 0.01 * top + amplitude * spot + noise
        image[hot] = top
        frame = np.clip(image, 0, top).astype(dtype)
        frame.flags.writeable = False
        frames.append(frame)
    return frames
