"""A pipeline's flow-control keys (CamServer's, pipeline_keys.FlowKeys): which frames are
processed, and when a run ends."""

from __future__ import annotations

import time

from . import pipeline_keys

PULSE_MOD = 1_000_000  # check_timestamp: pulse id and nanoseconds agree in their last 6 digits


class Gate:
    """Decides per frame whether it is processed, from the pipeline's flow-control keys."""

    def __init__(self, config: dict):
        keys = pipeline_keys.flow(config)
        self.keys = keys
        self.pause = keys.pause
        self.min_interval = 1.0 / keys.max_frame_rate if keys.max_frame_rate else 0.0
        self.pid_start, self.pid_stop = keys.pid_start, keys.pid_stop
        if self.pid_start is not None and self.pid_start <= 0:
            self.pid_stop = None  # held back, nothing ends the run either (until updated)
        self.records = keys.records
        self._count = 0
        self._last_time = -float("inf")
        self._last_pid = None
        self._last_stamp = None

    def admit(self, pulse_id: int, timestamp: tuple[int, int] = (0, 0)) -> bool:
        keys = self.keys
        self._count += 1
        if self.pause or self._count % keys.downsampling:
            return False
        if self.pid_start is not None and (self.pid_start <= 0 or pulse_id < self.pid_start):
            return False  # a start <= 0 holds everything back (CamServer's "writing disabled")
        if keys.enforce_pid and self._last_pid is not None and pulse_id <= self._last_pid:
            return False
        if (
            keys.enforce_timestamp
            and self._last_stamp is not None
            and timestamp <= self._last_stamp
        ):
            return False
        if keys.check_timestamp and pulse_id % PULSE_MOD != timestamp[1] % PULSE_MOD:
            return False
        now = time.monotonic()
        if now - self._last_time < self.min_interval:
            return False
        self._last_time, self._last_pid, self._last_stamp = now, pulse_id, tuple(timestamp)
        return True

    def passed(self, pulse_id: int) -> str | None:
        """Why a frame comes too late for the run (beyond the end of pid_range), or None: the
        run ends before it, even when the end id itself never arrived."""
        if self.pid_stop is not None and pulse_id > self.pid_stop:
            return f"pid_range end {self.pid_stop} passed"
        return None

    def finished(self, pulse_id: int, sent: int) -> str | None:
        """Why the pipeline is done (pid_range passed, records reached), or None."""
        if self.pid_stop is not None and pulse_id >= self.pid_stop:
            return f"pid_range end {self.pid_stop} reached"
        if self.records is not None and sent >= self.records:
            return f"{self.records} records sent"
        return None
