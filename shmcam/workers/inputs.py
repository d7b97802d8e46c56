"""Where a pipeline's frames come from.

- `RingInput`: its camera's ring, zero-copy (the normal case on the camera's node).
- `StreamInput`: a bsread stream: a foreign one (`input_stream`), a camera's, or another
  pipeline's (`input_pipeline`, a cascade). Arrays are views of the received ZMQ frames.
- `MergedInput`: two streams joined by pulse id (`input_stream2`).
- `Ticks`: no input at all, a tick at `max_frame_rate` for custom pipelines.

All hand out frames with `image`, `pulse_id`, `timestamp`, and tell the pipeline a frame's
axes and channels, whether it is still valid after processing, and what was missed.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import zmq

from shmcam.bsread import Message, Receiver
from shmcam.shm import RingReader
from shmcam.sources.base import Pacer, PulseCounter, arrival_time
from shmcam.sources.transforms import axis_arrays

MERGE_WINDOW = 100  # pulse ids kept waiting for the other stream
log = logging.getLogger(__name__)


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
    channels_of_frames = False  # frames are messages of channels (an image among them)

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


class RingInput(Input):
    """The camera's frames, read in place: the result must not outlive the frame unchecked.

    `policy` "recent" (processing pipelines): frames in order while the reader is at most one
    frame behind the newest, else the newest, the skipped ones counted: a reader that cannot
    keep up works on fresh frames, which are rarely overwritten under it. "sequential" (store
    pipelines, the dispatcher of a parallel pipeline): every frame while the reader keeps up.

    Frames are used in place while the ring keeps them long enough. Once one is overwritten
    under its user (processing outlasts a frame's time in the ring: a slow function, more
    workers than cores), each frame is first copied into a buffer of this input's, so that
    the work is not thrown away; once processing ends well within the ring's time again for
    QUICK_FRAMES frames in a row, frames are used in place again.
    """

    QUICK_FRAMES = 100

    def __init__(self, ring: str, policy: str = "sequential"):
        self.reader = RingReader(ring, policy=policy, timeout=30)
        self._axes_key = None
        self.copying = False
        self._buffer: np.ndarray | None = None  # what a copied frame's image is a view of
        self._copied = None  # the frame handed out as a copy
        self._quick = 0  # copied frames in a row processed well within the ring's time

    @property
    def geometry(self) -> tuple[tuple[int, ...], np.dtype] | None:
        return self.reader.shape, self.reader.dtype

    def next(self, timeout: float):
        return self.prepared(self.reader.wait(timeout=timeout))

    def prepared(self, frame):
        """The frame to use: in place, or while copying, with its image in the buffer (None
        if it was overwritten during the copy, counted torn)."""
        if frame is None or not self.copying:
            return frame
        image, buffer = frame.image, self._buffer
        if buffer is None or buffer.shape != image.shape or buffer.dtype != image.dtype:
            self._buffer = buffer = np.empty_like(image)
        np.copyto(buffer, image)
        if not self.reader.validate(frame):
            return None
        frame.image = buffer.view()
        frame.image.flags.writeable = False  # as a ring view: the function may not write
        self._copied = frame
        return frame

    def axes(self, frame) -> tuple[np.ndarray, np.ndarray]:
        """The frame's axes, built once per geometry and calibration, not per frame."""
        key = (frame.image.shape, frame.axes)
        if key != self._axes_key:
            height, width = frame.image.shape[:2]
            self._axes_key, self._axes = key, axis_arrays(width, height, frame.axes)
        return self._axes

    def valid(self, frame) -> bool:
        """False if the camera overwrote the frame meanwhile (counted as torn)."""
        if frame is self._copied:
            self._quick = self._quick + 1 if self.reader.lag < self.reader.slots // 2 else 0
            if self._quick >= self.QUICK_FRAMES:
                self.copying, self._quick, self._buffer = False, 0, None
                log.info("%s: processing is quick again: frames used in place", self.reader.base)
            return True
        intact = self.reader.validate(frame)
        if not intact and not self.copying:
            self.copying = True
            log.warning(
                "%s: a frame was overwritten while processed (processing outlasts frames in "
                "the ring): each frame is copied out of the ring first from now on",
                self.reader.base,
            )
        return intact

    def detach(self, result: dict, frame) -> dict:
        return detach(result, frame.image)

    def own(self, array: np.ndarray, frame) -> np.ndarray:
        return own(array, frame.image)

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


class StreamFrame:
    """A bsread message as a pipeline frame: its `image` channel and the rest as channels."""

    __slots__ = ("pulse_id", "timestamp", "image", "data")

    def __init__(self, message: Message, data: dict | None = None):
        self.pulse_id = message.pulse_id
        self.timestamp = message.global_timestamp
        self.data = message.data if data is None else data
        self.image = self.data.get("image")


class ChannelsInput(Input):
    """Frames that are messages: an `image` channel among others (`data`)."""

    channels_of_frames = True

    def axes(self, frame: StreamFrame) -> tuple[np.ndarray, np.ndarray]:
        """The stream's x_axis/y_axis channels, else pixel indices."""
        x_axis, y_axis = frame.data.get("x_axis"), frame.data.get("y_axis")
        if x_axis is None or y_axis is None:
            height, width = frame.image.shape[:2]
            return axis_arrays(width, height, None)
        return x_axis, y_axis

    def channels(self, frame: StreamFrame) -> dict:
        return frame.data


class StreamInput(ChannelsInput):
    """Messages of a bsread stream. Their arrays are views of ZMQ's buffers, which live as
    long as the arrays do: nothing needs copying or validating. `bind`: the input is a
    socket others connect to (a fanin's PULL)."""

    def __init__(self, address: str, mode: str = "SUB", bind: bool = False):
        self.receiver = Receiver(address, mode=mode, queue_size=10, bind=bind)
        self.address = address

    def next(self, timeout: float) -> StreamFrame | None:
        message = self.receiver.receive(timeout=timeout)
        return None if message is None else StreamFrame(message)

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
