"""Results put back in order: by ticket for the workers of a parallel pipeline
(`send_buffer_size`), by pulse id for a fanin (`pid_buffer`).

A result goes out once nothing earlier can come any more (its key is below the `bound` the
caller knows), or once more than `window` results wait behind a missing one: that one is
given up, and if it comes after all it is late, refused, and the caller counts it dropped.
So the output is strictly ordered and the wait for a slow result bounded.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from typing import Any


class Reorder:
    def __init__(self, window: int):
        self.window = window
        self.next = None  # keys below this have gone out or been given up
        self._heap: list[tuple[int, int, Any]] = []
        self._order = itertools.count()  # ties never compare the items

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, key: int, item: Any) -> bool:
        """Hold a result; False (not held) if it is late: a later one went out already."""
        if self.next is not None and key < self.next:
            return False
        heapq.heappush(self._heap, (key, next(self._order), item))
        return True

    def ready(self, bound: int | None = None) -> Iterator[Any]:
        """The results that may go out now, in order: those below `bound` (None: nothing is
        known to be final), and the oldest while more than `window` wait."""
        heap = self._heap
        while heap and ((bound is not None and heap[0][0] < bound) or len(heap) > self.window):
            key, _, item = heapq.heappop(heap)
            self.next = key + 1
            yield item

    def oldest(self) -> Any | None:
        """The oldest result held, or None."""
        return self._heap[0][2] if self._heap else None

    def drain(self) -> Iterator[Any]:
        """Everything held, in order (at the end of a run)."""
        while self._heap:
            key, _, item = heapq.heappop(self._heap)
            self.next = key + 1
            yield item
