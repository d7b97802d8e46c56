"""A source that is created again, with backoff, whenever it fails.

A camera instance must outlive its source: a replay file that is missing, a user script that
raises, a connection that breaks. The instance then stays up, reports offline with the error as
the reason, and tries again after a growing delay. Sources that reconnect by themselves (CA,
ZMQ) report offline through their own `online`/`reason` instead of raising.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from shmcam.restarts import RestartPolicy

from .base import Source

log = logging.getLogger(__name__)


class RetryingSource(Source):
    def __init__(self, factory: Callable[[], Source]):
        self._factory = factory
        self._source: Source | None = None
        self._backoff = RestartPolicy()
        self._retry_at = 0.0
        self._failure = "not started"
        self._counts = {"errors": 0, "dropped": 0}  # of the sources closed so far

    def read(self, timeout: float):
        if self._source is None and not self._open(timeout):
            return None
        try:
            item = self._source.read(timeout)
        except Exception as error:
            self._fail(error)
            return None
        return item

    def _open(self, timeout: float) -> bool:
        delay = self._retry_at - time.monotonic()
        if delay > 0:
            time.sleep(min(delay, timeout))
            return False
        try:
            self._source = self._factory()
        except Exception as error:
            self._fail(error)
            return False
        self._backoff.started()
        return True

    def _fail(self, error: Exception) -> None:
        delay = self._backoff.next_delay()
        self._failure = f"{type(error).__name__}: {error}"
        log.warning(
            "source failed (%s): trying again in %g s",
            self._failure,
            delay,
            exc_info=log.isEnabledFor(logging.DEBUG),
        )
        self._retry_at = time.monotonic() + delay
        self._close_source()

    def _close_source(self) -> None:
        source, self._source = self._source, None
        if source is None:
            return
        for name in self._counts:
            self._counts[name] += getattr(source, name)
        try:
            source.close()
        except Exception:
            log.exception("closing the failed source")

    @property
    def online(self) -> bool:
        return self._source is not None and self._source.online

    @property
    def reason(self) -> str:
        return self._source.reason if self._source is not None else self._failure

    @property
    def axes(self):
        return self._source.axes if self._source is not None else None

    def send_channels(self, channels: dict) -> dict:
        """The source's channels (a camera script's own code): its failure is the source's."""
        if self._source is None:
            return channels
        try:
            return self._source.send_channels(channels)
        except Exception as error:
            self._fail(error)
            return channels

    @property
    def errors(self) -> int:
        return self._counts["errors"] + (self._source.errors if self._source else 0)

    @property
    def dropped(self) -> int:
        return self._counts["dropped"] + (self._source.dropped if self._source else 0)

    def close(self) -> None:
        self._close_source()
