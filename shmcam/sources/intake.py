"""The camera's intake: every frame a source hands over is checked before it reaches the ring.

Sources read foreign data (a stream, an IOC, a user script). What the ring, the camera stream
and the processing cannot carry is refused here, counted and logged, never fatal: a pulse id
or timestamp that does not fit the ring's int64 fields, an image that is not a non-empty 2-D
array of a type bsread carries. float16 images (a std-daq stream or a script may send them) are
widened to float32 without loss. A configured `dtype` converts the pixels (the EPICS sources
reinterpret CA's signed types themselves, so theirs arrive in it already).

With `debug` (CamServer's verbose pulse-id logging), gaps in the pulse ids are logged.
"""

from __future__ import annotations

import logging
import operator

import numpy as np

from .base import Frame
from .config import IMAGE_DTYPES

log = logging.getLogger(__name__)

INT64_MAX = 2**63 - 1
NS_PER_S = 1_000_000_000
ACCEPTED = frozenset((np.dtype(name).kind, np.dtype(name).itemsize) for name in IMAGE_DTYPES)
WIDENED = {np.dtype(np.float16): np.dtype(np.float32)}


class Intake:
    """Checks frames of one camera; `rejected` counts the frames refused."""

    def __init__(self, config: dict, name: str = "camera", max_bytes: int | None = None):
        self.name = name
        self.max_bytes = max_bytes  # the node's max_frame_mb: a larger frame is refused
        self.dtype = np.dtype(config["dtype"]) if config.get("dtype") else None
        self.debug = bool(config.get("debug"))
        self.rejected = 0
        self._why = None  # the last reason logged: a repeated one is not logged again
        self._last_pulse_id = None
        self._step = None

    def accept(self, frame: Frame) -> Frame | None:
        """The frame as the ring takes it, or None if refused (counted and logged)."""
        image, pulse_id, timestamp = frame
        why = (
            _image_problem(image)
            or self._size_problem(image)
            or _pulse_id_problem(pulse_id)
            or _timestamp_problem(timestamp)
        )
        if why is not None:
            return self._refuse(why)
        self._why = None
        wide = WIDENED.get(image.dtype)
        if wide is not None or (self.dtype is not None and image.dtype != self.dtype):
            image = image.astype(self.dtype or wide)
        pulse_id = operator.index(pulse_id)
        if self.debug:
            self._log_gap(pulse_id)
        return image, pulse_id, (operator.index(timestamp[0]), operator.index(timestamp[1]))

    def _size_problem(self, image) -> str | None:
        if self.max_bytes is not None and image.nbytes > self.max_bytes:
            return (
                f"a frame of {image.nbytes / 2**20:.0f} MB ({image.shape[1]}x{image.shape[0]} "
                f"{image.dtype}), more than the node's max_frame_mb of "
                f"{self.max_bytes / 2**20:.0f}"
            )
        return None

    def _refuse(self, why: str) -> None:
        self.rejected += 1
        if why != self._why:
            self._why = why
            log.warning("%s: frame refused (counted as an error): %s", self.name, why)
        return None

    def _log_gap(self, pulse_id: int) -> None:
        last, self._last_pulse_id = self._last_pulse_id, pulse_id
        if last is None:
            return
        step = pulse_id - last
        if step != self._step:
            log.info(
                "%s: pulse id %d follows %d (step %d, was %s)",
                self.name,
                pulse_id,
                last,
                step,
                self._step,
            )
            self._step = step


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _image_problem(image) -> str | None:
    if not isinstance(image, np.ndarray):
        return f"the image is a {type(image).__name__}, not an array"
    if image.ndim != 2 or not image.size:
        return f"the image has shape {image.shape}, not (height, width)"
    dtype = image.dtype
    if dtype not in WIDENED and (dtype.kind, dtype.itemsize) not in ACCEPTED:
        return f"pixels of type {dtype} (bsread and the ring carry {', '.join(IMAGE_DTYPES)})"
    return None


def _pulse_id_problem(pulse_id) -> str | None:
    if not _is_int(pulse_id) or not 0 <= pulse_id <= INT64_MAX:
        return f"pulse id {pulse_id!r} is not an integer from 0 to 2**63-1"
    return None


def _timestamp_problem(timestamp) -> str | None:
    if not (
        isinstance(timestamp, tuple)
        and len(timestamp) == 2
        and all(map(_is_int, timestamp))
        and 0 <= timestamp[0] <= INT64_MAX
        and 0 <= timestamp[1] < NS_PER_S
    ):
        return f"timestamp {timestamp!r} is not (seconds, nanoseconds) within int64"
    return None
