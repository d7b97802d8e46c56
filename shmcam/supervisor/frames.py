"""Frames the REST API hands out: a camera's newest frame, a pipeline's preview image, and a
background averaged over a camera's next frames, all read from the instances' rings.

These calls wait for frames and may take seconds (a camera that sends nothing, a background of
many frames at a low rate), so at most `slots` of them run at once, each within a deadline: a
burst of them gets 503 "busy" for the surplus instead of holding every request thread, and the
node keeps answering /info and everything else.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import numpy as np

from shmcam.shm import RingReader, ring_base

from .errors import Conflict, Unavailable
from .manager import Manager

FRAME_TIMEOUT = 5.0
PREVIEW_TIMEOUT = 2.0  # a pipeline previews its image several times a second
BACKGROUND_TIMEOUT = 60.0  # for all the frames of one background
MAX_BACKGROUND_IMAGES = 1000


class Frames:
    def __init__(self, manager: Manager, slots: int):
        self.manager = manager
        self.node = manager.settings.node
        self.slots = slots
        self._slots = threading.BoundedSemaphore(slots)

    @contextmanager
    def slot(self):
        """One of the slow calls' slots, or Unavailable at once if all are taken."""
        if not self._slots.acquire(blocking=False):
            raise Unavailable(
                f"busy: {self.slots} frame reads or background collections are running "
                f"already; try again in a moment"
            )
        try:
            yield
        finally:
            self._slots.release()

    def camera_image(self, camera: str) -> np.ndarray:
        """A copy of the camera's newest frame (the camera is started if needed)."""
        with self.slot(), self._camera_ring(camera) as reader:
            return _grab(reader, True, f"camera {camera}", FRAME_TIMEOUT)

    def pipeline_image(self, instance_id: str) -> np.ndarray:
        """A copy of a running pipeline's newest preview image. Its camera is not started:
        looking at a pipeline must not bring back what was stopped."""
        if not self.manager.running_pipeline(instance_id).alive:
            raise Conflict(f"pipeline {instance_id} is not running")
        source = f"pipeline {instance_id} (only a 2-D numeric 'image' in its output is previewed)"
        base = ring_base(self.node, instance_id, "preview")
        with self.slot(), _open(base, source, PREVIEW_TIMEOUT) as reader:
            return _grab(reader, True, source, PREVIEW_TIMEOUT)

    def background(self, camera: str, n_images: int) -> np.ndarray:
        """The mean of the camera's next n_images frames, each used once."""
        deadline = time.monotonic() + BACKGROUND_TIMEOUT
        with self.slot(), self._camera_ring(camera) as reader:
            total = None
            for taken in range(n_images):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Conflict(
                        f"camera {camera} delivered {taken} of {n_images} frames within "
                        f"{BACKGROUND_TIMEOUT:g} s; take fewer images"
                    )
                frame = _grab(reader, False, f"camera {camera}", min(FRAME_TIMEOUT, left))
                if total is not None and frame.shape != total.shape:
                    raise Conflict(
                        f"camera {camera} changed its geometry while the background "
                        f"was taken; take it again"
                    )
                total = frame.astype(np.float64) if total is None else total + frame
        return total / n_images

    def _camera_ring(self, camera: str) -> RingReader:
        """A reader of the camera's ring (the camera is started if needed; it creates its
        ring with its first frame)."""
        self.manager.camera(camera)
        return _open(ring_base(self.node, camera), f"camera {camera}", FRAME_TIMEOUT)


def _no_frame(source: str, timeout: float) -> Conflict:
    return Conflict(f"{source} delivered no image within {timeout:g} s")


def _open(base: str, source: str, timeout: float) -> RingReader:
    try:
        return RingReader(base, timeout=timeout)
    except FileNotFoundError:
        raise _no_frame(source, timeout) from None


def _grab(reader: RingReader, newest: bool, source: str, timeout: float) -> np.ndarray:
    """A copy of the newest frame (newest=True) or of the next frame not handed out yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = (newest and reader.latest()) or reader.wait(0.5)
        if frame is not None:
            image = frame.image.copy()
            if reader.validate(frame):
                return image
    raise _no_frame(source, timeout)
