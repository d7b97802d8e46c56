"""A pipeline's preview: its output image, for people looking at it (the web page, the
`/api/v1/pipeline/instance/<id>/image` route).

The newest output image is copied into a small ring of the pipeline's own at most `RATE` times
a second, so that a viewer costs the pipeline one copy per preview frame (two when the image
is still a view of the camera's ring), never decoding of its stream, and the supervisor
renders it exactly as it renders a camera's ring. Only a result
whose `image` is a 2-D numeric array is previewed; an excluded image (`exclude: ["image"]`)
still is, since the preview never leaves the node.
"""

from __future__ import annotations

import logging
import struct
import time

import numpy as np

from shmcam.shm import RingWriter, ShmError

log = logging.getLogger(__name__)

RATE = 5.0  # preview frames per second at most
SLOTS = 2  # the newest, and the one a slow viewer may still be copying


class Preview:
    def __init__(self, base: str | None, rate: float = RATE):
        self.base = base
        self.period = 1.0 / rate
        self._next = 0.0
        self._ring: RingWriter | None = None

    def due(self, result: dict | None) -> np.ndarray | None:
        """The result's image when a preview frame is due, else None. The caller must make
        it its own (Input.own) before validating the frame: a ring view is copied while it
        may still be valid."""
        if self.base is None or not result or time.monotonic() < self._next:
            return None
        image = result.get("image")
        if (
            not isinstance(image, np.ndarray)
            or image.ndim != 2
            or image.size == 0
            or image.dtype.kind not in "uif"
        ):
            return None
        return image

    def publish(self, image: np.ndarray, pulse_id: int, timestamp) -> None:
        """Copy an image into the preview ring once its frame proved valid."""
        self._next = time.monotonic() + self.period
        try:
            if self._ring is None:
                self._ring = RingWriter(self.base, image.dtype, image.shape, SLOTS)
            self._ring.write(image, pulse_id, timestamp)
        except (ShmError, OSError, ValueError, struct.error) as error:
            # /dev/shm full, a pulse id out of range: the stream matters more than a preview
            log.warning("preview not written: %s", error)
            self._next = time.monotonic() + 10 * self.period

    def close(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None
