"""Any bsread stream as a camera: another camera server, a detector, a pipeline's output.

The frame's pulse id and global timestamp are the stream's. The stream's `width` and `height`
channels, when present, give a flat image its shape (and a 2-D image that disagrees with them
is skipped as the wrong size); its `x_axis` and `y_axis`, when evenly spaced, become the
frame's axes. ZMQ reconnects by itself, backing off up to RECONNECT_MAX; the source is offline
while no message has come for `source_timeout` seconds.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import zmq

from shmcam.bsread import Receiver

from .base import Source
from .transforms import linear_axes

log = logging.getLogger(__name__)

RECONNECT_MAX_MS = 5000
DEFAULT_TIMEOUT = 3.0


class BsreadSource(Source):
    """Config: `source` (the stream address, e.g. tcp://host:9000), `source_mode` (SUB, the
    default, or PULL), `image_channel` (default "image"), `source_timeout` (seconds)."""

    def __init__(self, config: dict):
        self.address = str(config["source"])
        self.channel = config.get("image_channel") or "image"
        self.timeout = float(config.get("source_timeout") or DEFAULT_TIMEOUT)
        self._context = zmq.Context()
        self._context.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
        self._receiver = Receiver(
            self.address, mode=config.get("source_mode") or "SUB", context=self._context, linger=0
        )
        self._last = None  # monotonic time of the last message
        self._axes_key = None

    def read(self, timeout: float):
        message = self._receiver.receive(timeout)
        if message is None:
            return None
        self._last = time.monotonic()
        image = self._image(message.data)
        if image is None:
            return None
        return image, message.pulse_id, message.global_timestamp

    def _image(self, data: dict) -> np.ndarray | None:
        image = data.get(self.channel)
        if not isinstance(image, np.ndarray) or image.ndim not in (1, 2):
            return self._skip(f"no 1-D or 2-D {self.channel!r} channel in the message")
        width, height = data.get("width"), data.get("height")
        if width is not None and height is not None:
            shape = (int(height), int(width))
            if image.ndim == 1 and image.size == shape[0] * shape[1]:
                image = image.reshape(shape)
            elif image.shape != shape:
                return self._skip(
                    f"image of shape {image.shape} in a message saying {shape[1]}x{shape[0]}"
                )
        elif image.ndim == 1:
            return self._skip("a flat image without width and height channels")
        self._update_axes(data.get("x_axis"), data.get("y_axis"), image.shape)
        return image

    def _skip(self, why: str) -> None:
        if not self.errors:
            log.warning("%s: frame skipped (counted as errors): %s", self.address, why)
        self.errors += 1
        return None

    def _update_axes(self, x_axis, y_axis, shape) -> None:
        if x_axis is None or y_axis is None or (np.size(x_axis), np.size(y_axis)) != shape[::-1]:
            self._axes_key = self.axes = None
            return
        key = (float(x_axis[0]), float(x_axis[-1]), float(y_axis[0]), float(y_axis[-1]), shape)
        if key != self._axes_key:  # the axes rarely change: not checked on every frame
            self._axes_key, self.axes = key, linear_axes(x_axis, y_axis)

    @property
    def online(self) -> bool:
        return self._last is not None and time.monotonic() - self._last < self.timeout

    @property
    def reason(self) -> str:
        if self._last is None:
            return f"waiting for the first message from {self.address}"
        silent = time.monotonic() - self._last
        if silent >= self.timeout:
            return f"no message from {self.address} for {silent:.0f} s"
        return f"receiving from {self.address}"

    def close(self) -> None:
        self._receiver.close()
        self._context.term()
