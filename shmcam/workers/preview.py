"""A pipeline's preview: its output image, for people looking at it (the web page, the
`/api/v1/pipeline/instance/<id>/image` route).

The newest output image is copied into a small ring of the pipeline's own at most `RATE` times
a second, so that a viewer costs the pipeline one copy per preview frame, never decoding of its
stream, and the supervisor renders it exactly as it renders a camera's ring. Only a result
whose `image` is a 2-D numeric array is previewed; an excluded image (`exclude: ["image"]`)
still is, since the preview never leaves the node.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from shmcam.shm import RingWriter, ShmError

log = logging.getLogger(__name__)

RATE = 5.0          # preview frames per second at most
SLOTS = 2           # the newest, and the one a slow viewer may still be copying


class Preview:
    def __init__(self, base: str | None, rate: float = RATE):
        self.base = base
        self.period = 1.0 / rate
        self._next = 0.0
        self._ring: RingWriter | None = None
        self._copy: np.ndarray | None = None

    def take(self, result: dict | None) -> np.ndarray | None:
        """A copy of the result's image when a preview frame is due, else None. Taken before
        the frame is validated: a ring view must be copied while it may still be valid. The
        copy is only good until the next call."""
        if self.base is None or not result or time.monotonic() < self._next:
            return None
        image = result.get("image")
        if not isinstance(image, np.ndarray) or image.ndim != 2 or image.size == 0 \
                or image.dtype.kind not in "uif":
            return None
        if self._copy is None or (self._copy.shape, self._copy.dtype) != (image.shape, image.dtype):
            self._copy = np.empty_like(image)      # once per geometry: no page faults per copy
        np.copyto(self._copy, image)
        return self._copy

    def publish(self, image: np.ndarray, pulse_id: int, timestamp) -> None:
        """Publish a taken image once its frame proved valid."""
        self._next = time.monotonic() + self.period
        try:
            if self._ring is None:
                self._ring = RingWriter(self.base, image.dtype, image.shape, SLOTS)
            self._ring.write(image, pulse_id, timestamp)
        except (ShmError, OSError, ValueError) as error:   # /dev/shm full: the stream matters more
            log.warning("preview not written: %s", error)
            self._next = time.monotonic() + 10 * self.period

    def close(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None
