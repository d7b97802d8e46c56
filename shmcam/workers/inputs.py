"""Where a pipeline's frames come from.

- `RingInput`: its camera's ring, zero-copy (the normal case on the camera's node).
- `RecordInput`: another pipeline's results on this node (`input_pipeline`, a cascade), read
  in place from that pipeline's record ring.
- `StreamInput`: a bsread stream: a foreign one (`input_stream`), a camera's, or another
  pipeline's (a cascade the supervisor runs over ZMQ). Arrays are views of the received ZMQ
  frames.
- `MergedInput`: two streams joined by pulse id (`input_stream2`).
- `Ticks`: no input at all, a tick at `max_frame_rate` for custom pipelines.

All hand out frames with `image`, `pulse_id`, `timestamp`, and tell the pipeline a frame's
axes and channels, whether it is still valid after processing, and what was missed.
"""

from __future__ import annotations

import math
import time

import numpy as np
import zmq

from shmcam.bsread import Message, Receiver
from shmcam.shm import RecordReader, RingReader
from shmcam.sources.base import Pacer, PulseCounter, arrival_time
from shmcam.sources.transforms import axis_arrays

MERGE_WINDOW = 100  # pulse ids kept waiting for the other stream


def detach(result: dict, image: np.ndarray) -> dict:
    """Copy the arrays that still point into a ring slot: ZMQ sends them later, by which
    time the camera may have reused the slot."""
    for key, value in result.items():
        result[key] = own(value, image)
    return result


def own(value, image: np.ndarray):
    """The value, copied if it is an array that still points into the ring slot of image."""
    if isinstance(value, np.ndarray) and np.may_share_memory(value, image):
        return value.copy()
    return value


class Input:
    """What every input tells the pipeline, with the answers of an input whose frames are
    its own (not views of a ring): always valid, nothing to copy, no geometry known ahead."""

    torn = lag = missed = 0
    geometry = None  # (shape, dtype) of the frames to come, for the warm-up; None: unknown

    def channels(self, frame) -> dict | None:
        return None

    def valid(self, frame) -> bool:
        return True

    def detach(self, result: dict, frame) -> dict:
        return result

    def own(self, array: np.ndarray, frame) -> np.ndarray:
        """The array, safe to keep after the frame: copied if it points into a ring slot."""
        return array

    def skip_to_newest(self) -> None:
        """Skip what queued up during start-up, where an input queues (the ring)."""

    def close(self) -> None:
        pass


class _InPlace(Input):
    """An input read in place from a ring: items are views the writer may overwrite, so a
    result is validated after use and its views are copied before they outlive the item."""

    reader: RingReader | RecordReader

    def next(self, timeout: float):
        return self.reader.wait(timeout=timeout)

    def valid(self, frame) -> bool:
        """False if the writer overwrote the item meanwhile (counted as torn)."""
        return self.reader.validate(frame)

    def skip_to_newest(self) -> None:
        self.reader.skip_to_newest()

    @property
    def missed(self) -> int:
        return self.reader.missed

    @property
    def torn(self) -> int:
        return self.reader.torn

    @property
    def lag(self) -> int:
        return self.reader.lag

    def close(self) -> None:
        self.reader.close()


class RingInput(_InPlace):
    """The camera's frames, read in place: the result must not outlive the frame unchecked."""

    def __init__(self, ring: str):
        self.reader = RingReader(ring, timeout=30)
        self._axes_key = None

    @property
    def geometry(self) -> tuple[tuple[int, ...], np.dtype] | None:
        return self.reader.shape, self.reader.dtype

    def axes(self, frame) -> tuple[np.ndarray, np.ndarray]:
        """The frame's axes, built once per geometry and calibration, not per frame."""
        key = (frame.image.shape, frame.axes)
        if key != self._axes_key:
            height, width = frame.image.shape[:2]
            self._axes_key, self._axes = key, axis_arrays(width, height, frame.axes)
        return self._axes

    def detach(self, result: dict, frame) -> dict:
        return detach(result, frame.image)

    def own(self, array: np.ndarray, frame) -> np.ndarray:
        return own(array, frame.image)


class RecordInput(_InPlace):
    """An upstream pipeline's records, read in place from its record ring: the `image`
    channel is the frame, every channel is handed over as with a stream (`bsdata`), and
    nothing is decoded or copied on the way in. The ring is the supervisor's (it exists
    before this starts, and follows the upstream's restarts by its generations)."""

    def __init__(self, base: str):
        self.reader = RecordReader(base, timeout=30)

    def axes(self, record) -> tuple[np.ndarray, np.ndarray]:
        return channel_axes(record.data, record.image)

    def channels(self, record) -> dict:
        return record.data

    def detach(self, result: dict, record) -> dict:
        return detach(result, record.memory)

    def own(self, array: np.ndarray, record) -> np.ndarray:
        return own(array, record.memory)


def channel_axes(data: dict, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The x_axis/y_axis channels of a message or record, else pixel indices."""
    x_axis, y_axis = data.get("x_axis"), data.get("y_axis")
    if x_axis is None or y_axis is None:
        height, width = image.shape[:2]
        return axis_arrays(width, height, None)
    return x_axis, y_axis


class StreamFrame:
    """A bsread message as a pipeline frame: its `image` channel and the rest as channels."""

    __slots__ = ("pulse_id", "timestamp", "image", "data")

    def __init__(self, message: Message, data: dict | None = None):
        self.pulse_id = message.pulse_id
        self.timestamp = message.global_timestamp
        self.data = message.data if data is None else data
        self.image = self.data.get("image")


class StreamInput(Input):
    """Messages of a bsread stream. Their arrays are views of ZMQ's buffers, which live as
    long as the arrays do: nothing needs copying or validating."""

    def __init__(self, address: str, mode: str = "SUB"):
        self.receiver = Receiver(address, mode=mode, queue_size=10)
        self.address = address

    def next(self, timeout: float) -> StreamFrame | None:
        message = self.receiver.receive(timeout=timeout)
        return None if message is None else StreamFrame(message)

    def axes(self, frame: StreamFrame) -> tuple[np.ndarray, np.ndarray]:
        return channel_axes(frame.data, frame.image)

    def channels(self, frame: StreamFrame) -> dict:
        return frame.data

    @property
    def missed(self) -> int:
        return self.receiver.rejected

    def close(self) -> None:
        self.receiver.close()


class MergedInput(StreamInput):
    """Two streams joined by pulse id: a frame goes out when both have sent its pulse id, with
    the channels of both (the first stream's win a name clash). An id that only one stream
    has is dropped once a later id matched, or when it falls out of the window; both count
    as missed."""

    def __init__(self, address: str, address2: str, mode: str = "SUB"):
        super().__init__(address, mode)
        self.second = Receiver(address2, mode=mode, queue_size=10)
        self._poller = zmq.Poller()
        self._poller.register(self.receiver.socket, zmq.POLLIN)
        self._poller.register(self.second.socket, zmq.POLLIN)
        self._pending: tuple[dict[int, Message], dict[int, Message]] = ({}, {})
        self._missed = 0

    def next(self, timeout: float) -> StreamFrame | None:
        deadline = time.monotonic() + timeout
        while True:
            wait = math.ceil(max(0.0, deadline - time.monotonic()) * 1000)
            ready = dict(self._poller.poll(wait))
            if not ready:
                return None
            for side, receiver in enumerate((self.receiver, self.second)):
                if receiver.socket in ready:
                    message = receiver.receive(timeout=0)
                    if message is not None:
                        frame = self._match(side, message)
                        if frame is not None:
                            return frame

    def _match(self, side: int, message: Message) -> StreamFrame | None:
        mine, theirs = self._pending[side], self._pending[1 - side]
        other = theirs.pop(message.pulse_id, None)
        if other is None:
            mine[message.pulse_id] = message
            if len(mine) > MERGE_WINDOW:
                del mine[min(mine)]
                self._missed += 1
            return None
        for pending in self._pending:  # ids older than a match will never match
            for pulse_id in [p for p in pending if p < message.pulse_id]:
                del pending[pulse_id]
                self._missed += 1
        first, second = (message, other) if side == 0 else (other, message)
        return StreamFrame(first, {**second.data, **first.data})

    @property
    def missed(self) -> int:
        return self._missed + self.receiver.rejected + self.second.rejected

    def close(self) -> None:
        super().close()
        self.second.close()


class TickFrame:
    __slots__ = ("pulse_id", "timestamp", "image")

    def __init__(self, pulse_id: int, timestamp: tuple[int, int]):
        self.pulse_id, self.timestamp, self.image = pulse_id, timestamp, None


class Ticks(Input):
    """No input: a frame to fill at `rate` per second (custom pipelines), stamped with a pulse
    id like a 100 Hz machine's and the time."""

    def __init__(self, rate: float):
        self.pacer = Pacer(rate)
        self.pulses = PulseCounter()

    def next(self, timeout: float) -> TickFrame | None:
        if not self.pacer.wait(timeout):
            return None
        return TickFrame(self.pulses.next(), arrival_time())
