"""Cameras that send each frame as two ZMQ parts, a small header and the raw pixels:
CamServer's `stream` (std-daq's image format) and `array10` (PSI's array-1.0).

`stream` (SUB): a packed little-endian ImageMetadata {id u64, height u64, width u64, dtype u16,
status u16, source_id u16} (30 bytes), then the pixels; the pulse id is `id`. dtype codes: 1, 2,
4, 8 = uint8..uint64; 11, 12, 14, 18 = int8..int64; 22, 24, 28 = float16, float32, float64.
`array10` (`mode` SUB or PULL): a JSON header {"shape": [height, width], "type": "<dtype>"},
then the pixels; its pulse ids are counted (from the clock, as for every source without them).
Timestamps are the arrival times. Pixels are viewed in the received part without a copy. A
part that does not hold what its header says is counted and skipped, never fatal.
"""

from __future__ import annotations

import json
import logging
import struct
import time

import numpy as np
import zmq

from .base import PulseCounter, Source, arrival_time

log = logging.getLogger(__name__)

RECONNECT_MAX_MS = 5000
MAX_HEADER = 64 << 10
METADATA = struct.Struct("<QQQHHH")
DTYPE_CODES = {
    1: "uint8",
    2: "uint16",
    4: "uint32",
    8: "uint64",
    11: "int8",
    12: "int16",
    14: "int32",
    18: "int64",
    22: "float16",
    24: "float32",
    28: "float64",
}
ARRAY10_TYPES = frozenset(DTYPE_CODES.values())
MODES = {"SUB": zmq.SUB, "PULL": zmq.PULL}


class BadFrame(ValueError):
    """A message that does not hold the frame its header announces."""


def _pixels(data: zmq.Frame, dtype: str, height: int, width: int) -> np.ndarray:
    if height <= 0 or width <= 0:
        raise BadFrame(f"a {width}x{height} frame")
    dtype = np.dtype(dtype)
    buffer = data.buffer
    if len(buffer) != height * width * dtype.itemsize:
        raise BadFrame(f"{len(buffer)} bytes of pixels for a {width}x{height} {dtype} frame")
    image = np.frombuffer(buffer, dtype).reshape(height, width)
    return image


class TwoPartSource(Source):
    """A connected SUB or PULL socket whose messages are (header, pixels)."""

    MODE = "SUB"

    def __init__(self, config: dict, context=None):
        self.address = str(config["source"])
        self._context = zmq.Context()
        self._context.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
        self._socket = self._context.socket(MODES[config.get("mode") or self.MODE])
        self._socket.linger = 0
        if self._socket.type == zmq.SUB:
            self._socket.setsockopt(zmq.SUBSCRIBE, b"")
        self._socket.connect(self.address)
        self._last = None
        self._why = None

    def frame(self, header: zmq.Frame, data: zmq.Frame) -> tuple[np.ndarray, int]:
        """(image, pulse_id) of a message; BadFrame if it does not hold one."""
        raise NotImplementedError

    def read(self, timeout: float):
        if not self._socket.poll(timeout * 1000):
            return None
        parts = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
        self._last = time.monotonic()
        try:
            if len(parts) != 2:
                raise BadFrame(f"{len(parts)} parts instead of 2 (header, pixels)")
            image, pulse_id = self.frame(*parts)
        except BadFrame as error:
            self.errors += 1
            if str(error) != self._why:
                self._why = str(error)
                log.warning("%s: message skipped (counted as an error): %s", self.address, error)
            return None
        self._why = None
        return image, pulse_id, arrival_time()

    @property
    def online(self) -> bool:
        return self._last is not None

    @property
    def reason(self) -> str:
        if self._last is None:
            return f"waiting for the first message from {self.address}"
        return f"receiving from {self.address}"

    def close(self) -> None:
        self._socket.close()
        self._context.term()


class StdDaqImageSource(TwoPartSource):
    def frame(self, header, data):
        meta = header.bytes
        if len(meta) != METADATA.size:
            raise BadFrame(f"an ImageMetadata of {len(meta)} bytes instead of {METADATA.size}")
        pulse_id, height, width, code, _status, _source_id = METADATA.unpack(meta)
        dtype = DTYPE_CODES.get(code)
        if dtype is None:
            raise BadFrame(f"unknown dtype code {code}")
        return _pixels(data, dtype, height, width), pulse_id


class Array10Source(TwoPartSource):
    def __init__(self, config: dict, context=None):
        super().__init__(config, context)
        self._pulse_ids = PulseCounter()

    def frame(self, header, data):
        if len(header) > MAX_HEADER:
            raise BadFrame(f"a header of {len(header)} bytes")
        try:
            meta = json.loads(header.bytes)
        except (ValueError, RecursionError) as error:
            raise BadFrame(f"the header is not JSON: {error}") from None
        shape = meta.get("shape") if isinstance(meta, dict) else None
        dtype = meta.get("type") if isinstance(meta, dict) else None
        if not (
            isinstance(shape, list)
            and len(shape) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) for n in shape)
        ):
            raise BadFrame(f"header shape {shape!r} is not [height, width]")
        if dtype not in ARRAY10_TYPES:
            raise BadFrame(f"header type {dtype!r} is none of {', '.join(sorted(ARRAY10_TYPES))}")
        return _pixels(data, dtype, *shape), self._pulse_ids.next()
