"""What the camera sources share: their interface, pacing and fallback pulse ids."""

from __future__ import annotations

import time

import numpy as np

Frame = tuple[np.ndarray, int, tuple[int, int]]


class Source:
    """The interface of a camera source (simulation.py is the simplest one).

    `read(timeout)` returns the next frame as (image, pulse_id, (sec, ns)), or None when none
    came within timeout seconds. The image is 2-D and the source never modifies it afterwards:
    the camera stream hands it to ZMQ without a copy.
    `online` and `reason` say whether frames can come now and why not (served by is_online).
    `axes` are the linear axes (x0, dx, y0, dy) of the last frame if the source has its own,
    else None. `errors` counts frames received but skipped (wrong size); `dropped` counts
    frames lost inside the source (a full queue).
    """

    online = True
    reason = ""
    axes: tuple[float, float, float, float] | None = None
    errors = 0
    dropped = 0

    def read(self, timeout: float) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections, files and threads."""


class Pacer:
    """Hands out due times at a fixed rate without drifting, and without bursts after a stall
    (a late frame moves the schedule, it does not make the next ones come faster)."""

    def __init__(self, rate: float):
        self.period = 1.0 / rate
        self._due = time.monotonic()

    def wait(self, timeout: float) -> bool:
        """Sleep until the next frame is due (True), or for timeout if it is later (False)."""
        delay = self._due - time.monotonic()
        if delay > timeout:
            time.sleep(timeout)
            return False
        if delay > 0:
            time.sleep(delay)
        self._due = max(self._due + self.period, time.monotonic() - 1.0)
        return True


class PulseCounter:
    """Pulse ids for sources without their own: the wall clock in 10 ms units (CamServer's
    `simulate_pulse_id`), but never repeating or going back, so a reconnect never resets them
    and a restarted camera continues above its last ids."""

    def __init__(self):
        self._last = -1

    def next(self) -> int:
        self._last = max(self._last + 1, time.time_ns() // 10_000_000)
        return self._last


def arrival_time() -> tuple[int, int]:
    """Now as (sec, ns): the timestamp of a frame whose source has none."""
    sec, ns = divmod(time.time_ns(), 1_000_000_000)
    return sec, ns
