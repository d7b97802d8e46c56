"""Frame averaging over time: `averaging` (block or moving mean of the camera frames) and
`image_averaging` (moving mean of the pre-processed frames). Results are float64 and new
arrays (a sender may still hold the previous one); a change of shape starts afresh.
"""

from __future__ import annotations

from collections import deque

import numpy as np


class BlockMean:
    """The mean of every n frames: None until the n-th frame of a block."""

    def __init__(self, n: int):
        self.n = n
        self.total: np.ndarray | None = None
        self.count = 0

    def add(self, frame: np.ndarray) -> np.ndarray | None:
        if self.total is None or self.total.shape != frame.shape:
            self.total, self.count = np.zeros(frame.shape), 0
        self.total += frame
        self.count += 1
        if self.count < self.n:
            return None
        mean, self.total = self.total, None
        mean /= self.n
        return mean


class MovingMean:
    """The mean of the last n frames (of all of them while fewer have come).

    A running sum plus the window of frames (in their own dtype), so a frame costs one add and
    one subtract, not n adds. Exact for integer frames; for float frames the sum is rebuilt
    whenever a frame with NaN or inf leaves the window, which a subtraction cannot undo.
    """

    def __init__(self, n: int):
        self.n = n
        self.window: deque[np.ndarray] = deque()
        self.total: np.ndarray | None = None

    def add(self, frame: np.ndarray) -> np.ndarray:
        if self.total is None or self.total.shape != frame.shape:
            self.window.clear()
            self.total = np.zeros(frame.shape)
        frame = np.array(frame)  # the caller's array may be a ring slot, reused soon
        self.window.append(frame)
        self.total += frame
        if len(self.window) > self.n:
            oldest = self.window.popleft()
            if oldest.dtype.kind == "f" and not np.isfinite(oldest.sum()):
                self.total = np.sum(self.window, axis=0, dtype=np.float64)
            else:
                self.total -= oldest
        return self.total / len(self.window)
