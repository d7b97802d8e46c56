"""A pipeline's flow-control keys (CamServer's): which frames are processed, and when a run
ends. Shared by processing pipelines and store pipelines."""

from __future__ import annotations

import time


class Gate:
    """Decides per frame whether it is processed, from the pipeline's flow-control keys."""

    def __init__(self, config: dict):
        self.pause = bool(config.get("pause"))
        rate = config.get("max_frame_rate")
        self.min_interval = 1.0 / rate if rate else 0.0
        self.downsampling = max(1, int(config.get("downsampling") or 1))
        pid_range = config.get("pid_range") or (None, None)
        self.pid_start, self.pid_stop = pid_range
        self.records = config.get("records")
        self.enforce_pid = bool(config.get("enforce_pid"))
        self._count = 0
        self._last_time = -float("inf")
        self._last_pid = None

    def admit(self, pulse_id: int) -> bool:
        self._count += 1
        if self.pause or self._count % self.downsampling:
            return False
        if self.pid_start is not None and pulse_id < self.pid_start:
            return False
        if self.enforce_pid and self._last_pid is not None and pulse_id <= self._last_pid:
            return False
        now = time.monotonic()
        if now - self._last_time < self.min_interval:
            return False
        self._last_time, self._last_pid = now, pulse_id
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
