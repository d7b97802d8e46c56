"""CamServer's watch over a pipeline's input: `camera_timeout` (reconnect after a silence),
`stream_timeout` with `abort_on_timeout` (end the instance) and `debug` (log a pulse id off
the input's stride). One watch for the pipeline's loop and a parallel pipeline's dispatcher."""

from __future__ import annotations

import logging
import time

from .pipeline_keys import ErrorKeys

log = logging.getLogger(__name__)


class InputTimeout(RuntimeError):
    """No frame within stream_timeout, with abort_on_timeout: the instance ends."""


class InputWatch:
    def __init__(self):
        self.last_frame = self.last_reconnect = time.monotonic()
        self.pids = (None, None)  # the last two pulse ids, for debug

    def frame(self, pulse_id: int, keys: ErrorKeys) -> None:
        """A frame came."""
        self.last_frame = time.monotonic()
        if keys.debug:
            former, current = self.pids
            if former is not None and pulse_id != current + (current - former):
                log.warning("Unexpected PID: %d - previous: %d, %d", pulse_id, former, current)
                current = None
            self.pids = (current, pulse_id)

    def silence(self, keys: ErrorKeys, input) -> None:
        """No frame within receive_timeout: past stream_timeout with abort_on_timeout the
        instance ends; past camera_timeout the input is reconnected."""
        now = time.monotonic()
        if keys.abort_on_timeout and now - self.last_frame > keys.stream_timeout:
            raise InputTimeout(
                f"no frame for {keys.stream_timeout:g} s (stream_timeout, abort_on_timeout)"
            )
        quiet = now - max(self.last_frame, self.last_reconnect)
        if keys.camera_timeout is not None and quiet > keys.camera_timeout:
            log.warning("no frame for %g s (camera_timeout): reconnecting", keys.camera_timeout)
            input.reconnect()
            self.last_reconnect = time.monotonic()
