"""A realistic simulated beam for demos, tests and benchmarks (CamServer's `simulation`).

Frames are generated once and cycled, so even 2560x2160 at 100 Hz costs almost nothing per
frame: a tilted 2-D Gaussian spot with shot-to-shot jitter and a slow drift, a dark offset,
noise and a few hot pixels, as a camera looking at a beam screen shows. CamServer's
`image_type`: `beam` (that), `raw` (the same without the spot: a dark camera), `static_beam`
and `static_raw` (one frame of either, sent again and again).
"""

from __future__ import annotations

import time

import numpy as np

from .base import Pacer, Source, arrival_time


def beam_frames(
    size_x: int = 1280,
    size_y: int = 960,
    dtype="uint16",
    count: int = 16,
    seed: int = 0,
    beam: bool = True,
) -> list[np.ndarray]:
    """count read-only frames of shape (size_y, size_x); without the spot if not beam."""
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
        amplitude = 0.6 * top * (1 + rng.normal(0, 0.03)) * beam
        noise = rng.normal(0.0, 0.004 * top, spot.shape).astype(np.float32)
        image = 0.01 * top + amplitude * spot + noise
        image[hot] = top
        frame = np.clip(image, 0, top).astype(dtype)
        frame.flags.writeable = False
        frames.append(frame)
    return frames


class SimulationSource(Source):
    """A simulated camera: frames of `image_type` at `frame_rate`, pulse ids of a 100 Hz
    machine.

    Config keys (CamServer's): size_x, size_y, image_type, frame_rate (default 10), dtype
    (default uint16). Pulse ids count as on a 100 Hz machine: they start from the wall clock
    in units of 10 ms and step by 100/frame_rate per frame (a 10 Hz camera's ids step by 10),
    never skipping or repeating under jitter.
    """

    def __init__(self, config: dict, context=None):
        self.size = (config.get("size_x") or 1280, config.get("size_y") or 960)
        self.frame_rate = float(config.get("frame_rate") or 10.0)
        image_type = config.get("image_type") or "beam"
        self.frames = beam_frames(
            *self.size,
            dtype=config.get("dtype") or "uint16",
            count=1 if image_type.startswith("static_") else 16,
            beam=image_type.endswith("beam"),
        )
        self.online, self.reason = True, "simulation"
        self._n = 0
        self._pacer = Pacer(self.frame_rate)
        self._first_pulse = time.time_ns() // 10_000_000
        self._pulse_step = max(1, round(100 / self.frame_rate))

    def read(self, timeout: float):
        """The next (image, pulse_id, (sec, ns)) when it is due, or None after timeout."""
        if not self._pacer.wait(timeout):
            return None
        image = self.frames[self._n % len(self.frames)]
        pulse_id = self._first_pulse + self._n * self._pulse_step
        self._n += 1
        return image, pulse_id, arrival_time()
