"""Any bsread stream as a camera (CamServer's `bschannel`), and std-daq's detectors (`stddaq`).

`source` is the stream address, `mode` SUB (default) or PULL, `channel` the image channel (by
default the message's only channel, else `image`), `timeout` the milliseconds without a message
after which the camera is offline (-1: never). Unlike CamServer, which loses them (§12), the
frame's pulse id and global timestamp are the stream's. The stream's `width` and `height`
channels, when present, give a flat image its shape (a 2-D image that disagrees with them is
skipped as the wrong size); its `x_axis` and `y_axis`, when evenly spaced, become the frame's
axes. Whatever a message holds, a bad one is counted and skipped, never fatal. ZMQ reconnects
by itself, backing off up to RECONNECT_MAX.

`stddaq`: `source` is the device name; the stream address is the value of that key in Redis at
`url` (host:port), database `db`; the image channel defaults to `<device>:FPICTURE`.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import zmq

from shmcam.bsread import Receiver

from .base import Source
from .resp import redis_get
from .transforms import linear_axes

log = logging.getLogger(__name__)

RECONNECT_MAX_MS = 5000
DEFAULT_CHANNEL = "image"


def _is_size(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


class BschannelSource(Source):
    def __init__(self, config: dict, context=None):
        self.address = self.stream_address(config)
        self.channel = config.get("channel")
        timeout = config.get("timeout", -1)
        self.timeout = None if timeout is None or timeout < 0 else timeout / 1000
        self._context = zmq.Context()
        self._context.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
        self._receiver = Receiver(
            self.address, mode=config.get("mode") or "SUB", context=self._context, linger=0
        )
        self._skipped = 0
        self._why = None
        self._last = None  # monotonic time of the last message
        self._axes_key = None

    def stream_address(self, config: dict) -> str:
        return str(config["source"])

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
        name = self.channel
        if name is None:
            name = next(iter(data)) if len(data) == 1 else DEFAULT_CHANNEL
        image = data.get(name)
        if not isinstance(image, np.ndarray) or image.ndim not in (1, 2):
            return self._skip(f"no 1-D or 2-D {name!r} channel in the message")
        width, height = data.get("width"), data.get("height")
        if width is not None and height is not None:
            if not (_is_size(width) and _is_size(height) and width > 0 and height > 0):
                return self._skip(f"width {width!r} and height {height!r} are not sizes")
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
        self._why = None
        return image

    def _skip(self, why: str) -> None:
        if why != self._why:
            self._why = why
            log.warning("%s: message skipped (counted as an error): %s", self.address, why)
        self._skipped += 1
        return None

    def _update_axes(self, x_axis, y_axis, shape) -> None:
        if not all(
            isinstance(axis, np.ndarray) and axis.dtype.kind in "uif" and axis.size == size
            for axis, size in ((x_axis, shape[1]), (y_axis, shape[0]))
        ):
            self._axes_key = self.axes = None
            return
        key = (float(x_axis[0]), float(x_axis[-1]), float(y_axis[0]), float(y_axis[-1]), shape)
        if key != self._axes_key:  # the axes rarely change: not checked on every frame
            self._axes_key, self.axes = key, linear_axes(x_axis, y_axis)

    @property
    def errors(self) -> int:
        return self._skipped + self._receiver.rejected

    @property
    def online(self) -> bool:
        return self._last is not None and (
            self.timeout is None or time.monotonic() - self._last < self.timeout
        )

    @property
    def reason(self) -> str:
        if self._last is None:
            return f"waiting for the first message from {self.address}"
        silent = time.monotonic() - self._last
        if self.timeout is not None and silent >= self.timeout:
            return f"no message from {self.address} for {silent:.0f} s"
        return f"receiving from {self.address}"

    def close(self) -> None:
        self._receiver.close()
        self._context.term()


class StddaqSource(BschannelSource):
    """std-daq's detector stream, its address looked up in Redis when the camera starts."""

    def __init__(self, config: dict, context=None):
        config = {**config, "channel": config.get("channel") or f"{config['source']}:FPICTURE"}
        super().__init__(config, context)

    def stream_address(self, config: dict) -> str:
        device, redis = config["source"], config["url"]
        address = redis_get(redis, device, config.get("db") or 0)
        if not address or "://" not in address:
            raise LookupError(
                f"Redis at {redis} holds no stream address for device {device!r} (got {address!r})"
            )
        return address
