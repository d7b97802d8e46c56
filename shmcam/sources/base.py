"""What the camera sources share: their interface, pacing and fallback pulse ids."""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

Frame = tuple[np.ndarray, int, tuple[int, int]]


class Context(NamedTuple):
    """What a source may need beyond its config: the camera's name (CamServer's bsread
    cameras read the channel `<name>:FPICTURE`) and the folder of uploaded camera scripts."""

    camera: str = "camera"
    scripts_dir: Path | None = None


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

    @classmethod
    def probe(cls, config: dict, context: Context, timeout: float) -> tuple[bool, str]:
        """(online, reason) without running the camera (CamServer's verify_camera_online),
        within about timeout seconds. By default a source is online: streams are not probed,
        since a PULL connection would take frames from the camera's real reader."""
        return True, f"{config['source_type']} cameras are checked when they run"

    def read(self, timeout: float) -> Frame | None:
        raise NotImplementedError

    def send_channels(self, channels: dict) -> dict:
        """The channels of the camera stream for a frame: CamServer's six by default; a
        CamServer camera script may add its own (get_send_channels)."""
        return channels

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


class Throttle:
    """At most `rate` frames per second from a source that is not paced by its config:
    frames due on a fixed schedule are kept, the others skipped (not counted: asked for)."""

    def __init__(self, rate: float):
        self.period = 1.0 / rate
        self._due = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._due:
            return False
        late = now - self._due >= self.period  # a stall: start the schedule again from now
        self._due = (now if late else self._due) + self.period
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
