"""When to try again after a failure: one policy for instances (the supervisor restarting a
permanent instance) and sources (a camera re-creating its lost connection).

Delays grow with the failures of a time window, so something that fails at once again and
again (flapping) is retried less and less often, while a first failure is retried within half a
second. A run that lasted `healthy_after` seconds proves the thing works: its failure starts
afresh at the shortest delay, however often it failed long before. Jitter spreads the retries
of many instances that failed together (a camera IOC restarting under 20 pipelines) so they do
not come back in lockstep. circus's flapping plugin is the model of the idea.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable

DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class RestartPolicy:
    def __init__(
        self,
        delays: tuple[float, ...] = DELAYS,
        healthy_after: float = 10.0,
        window: float = 300.0,
        jitter: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        uniform: Callable[[], float] = random.random,
    ):
        if not delays or min(delays) < 0 or not 0 <= jitter < 1:
            raise ValueError("delays must be non-negative and jitter in [0, 1)")
        self.delays = delays
        self.healthy_after = healthy_after
        self.window = window
        self.jitter = jitter
        self._clock = clock
        self._uniform = uniform
        self._failures: deque[float] = deque()
        self._started: float | None = None

    @property
    def failures(self) -> int:
        """Failures counted now (within the window, since the last healthy run)."""
        self._forget(self._clock())
        return len(self._failures)

    def started(self) -> None:
        """The thing (re)started now: a failure after `healthy_after` seconds resets."""
        self._started = self._clock()

    def reset(self) -> None:
        """It is known to work (e.g. every channel connected): the next delay is the first."""
        self._failures.clear()

    def next_delay(self) -> float:
        """It failed now: seconds to wait before the next try."""
        now = self._clock()
        if self._started is not None and now - self._started >= self.healthy_after:
            self._failures.clear()
        self._started = None
        self._forget(now)
        delay = self.delays[min(len(self._failures), len(self.delays) - 1)]
        self._failures.append(now)
        return delay * (1 + self.jitter * (2 * self._uniform() - 1))

    def _forget(self, now: float) -> None:
        while self._failures and now - self._failures[0] > self.window:
            self._failures.popleft()
