"""Where a pipeline's frames come from.

- `RingInput`: its camera's ring, zero-copy (the normal case on the camera's node).
- `RecordInput`: another pipeline's results on this node (`input_pipeline`, a cascade), read
  in place from that pipeline's record ring.
- `StreamInput`: a bsread stream: a foreign one (`input_stream`, a stream pipeline's
  `bsread_address`, or `bsread_channels` through the dispatcher), a camera's, or another
  pipeline's (a cascade the supervisor runs over ZMQ). Arrays are views of the received ZMQ
  frames.
- `MergedInput`: two streams joined by pulse id (`input_stream2`, `input_pipeline2`,
  `bsread_address2`, `bsread_channels2`).
- `JoinedInput`: a processing pipeline's frames joined with bsread data of equal pulse id
  (`bsread_address` or `bsread_channels`), handed to the function as `bsdata`.
- `Ticks`: no input at all, a tick at `max_frame_rate` for custom pipelines.

All hand out frames with `image`, `pulse_id`, `timestamp`, and tell the pipeline a frame's
axes and channels, whether it is still valid after processing, and what was missed;
`reconnect()` is what a pipeline does when its input fell silent (`camera_timeout`).
"""

from __future__ import annotations

import collections
import logging
import math
import time

import numpy as np
import zmq

from shmcam.bsread import Decoder, Message, Receiver
from shmcam.bsread.compression import BITSHUFFLE_LZ4
from shmcam.shm import RecordReader, RingReader
from shmcam.sources.base import Pacer, PulseCounter, arrival_time
from shmcam.sources.transforms import axis_arrays

from . import dispatcher, pipeline_keys
from .pipeline_keys import BsreadSource
from .pipeline_types import pipeline_type

log = logging.getLogger(__name__)

STREAM_QUEUE = 10  # receive high-water mark of an input stream
CAMERA_CHANNELS = ("image", "width", "height", "timestamp", "x_axis", "y_axis")
HELD_POLL = 0.005  # s between looks for the bsread data of frames that wait for it
HELD_BYTES = 1 << 30  # frames waiting for their bsread data hold at most this much memory
CUSTOM_RATE = 10.0  # frames/s of a custom pipeline without max_frame_rate (shmcam's generators)


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

    def reconnect(self) -> None:
        """After a silence: connect again (a stream), or check the source is still there."""

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

    def reconnect(self) -> None:
        """The reader follows a restarted camera's ring by itself: a silent ring is fine while
        its camera runs (its source may be offline); one whose camera is gone ends the
        pipeline, as CamServer's does when it cannot reconnect."""
        if not self.reader.writer_alive():
            raise ConnectionError(f"ring {self.reader.base} has no writer any more")

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


class Connection:
    """One bsread stream read by a pipeline: an address, or (`source` with channels) a stream
    the dispatcher opens for the channels and that is released on close. `raw` keeps images
    that arrive bitshuffle-compressed as they came (for HDF5 files, which take them as they
    are); `bind`: a socket others connect to (a fanin's PULL)."""

    def __init__(
        self,
        address: str | None = None,
        mode: str = "SUB",
        queue_size: int = STREAM_QUEUE,
        source: BsreadSource | None = None,
        raw: bool = False,
        bind: bool = False,
    ):
        self.source, self.bind = source, bind
        if source is not None:
            mode = source.mode
            address = source.address or dispatcher.request_stream(source)
        self.address, self.mode, self.queue_size = address, mode, queue_size
        self.decoder = Decoder(raw=_compressed_image) if raw else None
        try:
            self.receiver = self._open()
        except Exception:
            self._release()
            raise

    def _open(self) -> Receiver:
        return Receiver(
            self.address,
            mode=self.mode,
            bind=self.bind,
            queue_size=self.queue_size,
            decoder=self.decoder,
        )

    @property
    def rejected(self) -> int:
        return self.receiver.rejected

    def reconnect(self) -> None:
        rejected = self.receiver.rejected
        self.receiver.close()
        self.receiver = self._open()
        self.receiver.rejected = rejected

    def _release(self) -> None:
        if self.source is not None and self.source.address is None and self.address:
            dispatcher.remove_stream(self.source, self.address)

    def close(self) -> None:
        self.receiver.close()
        self._release()


def _compressed_image(name: str, shape: tuple[int, ...], codec: str) -> bool:
    return codec == BITSHUFFLE_LZ4 and len(shape) >= 2


class RingInput(_InPlace):
    """The camera's frames, read in place: the result must not outlive the frame unchecked.

    `policy` "recent" (processing pipelines): frames in order while the reader is at most one
    frame behind the newest, else the newest, the skipped ones counted: a reader that cannot
    keep up works on fresh frames, which are rarely overwritten under it. "sequential" (a
    store pipeline, FILE mode, a fanout, the dispatcher of a parallel pipeline): every frame
    while the reader keeps up.

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
        if it was overwritten during the copy: counted missed, as no work was lost on it)."""
        if frame is None or not self.copying:
            return frame
        image, buffer = frame.image, self._buffer
        if buffer is None or buffer.shape != image.shape or buffer.dtype != image.dtype:
            self._buffer = buffer = np.empty_like(image)
        np.copyto(buffer, image)
        if not self.reader.copied(frame):
            return None
        frame.image = buffer.view()
        frame.image.flags.writeable = False  # as a ring view: the function may not write
        self._copied = frame
        return frame

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

    channels_of_frames = True

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

    channels_of_frames = True

    def __init__(self, connection: Connection):
        self.connection = connection

    def next(self, timeout: float) -> StreamFrame | None:
        message = self.connection.receiver.receive(timeout=timeout)
        return None if message is None else StreamFrame(message)

    def axes(self, frame: StreamFrame) -> tuple[np.ndarray, np.ndarray]:
        return channel_axes(frame.data, frame.image)

    def channels(self, frame: StreamFrame) -> dict:
        return frame.data

    def reconnect(self) -> None:
        self.connection.reconnect()

    @property
    def missed(self) -> int:
        return self.connection.rejected

    def close(self) -> None:
        self.connection.close()


class MergedInput(StreamInput):
    """Two streams joined by pulse id: a frame goes out when both have sent its pulse id, with
    the channels of both (the first stream's win a name clash). An id that only one stream
    has is dropped once a later id matched, or when more than `window` ids wait; both count
    as missed."""

    def __init__(self, first: Connection, second: Connection, window: int):
        super().__init__(first)
        self.second = second
        self.window = window
        self._pending: tuple[dict[int, Message], dict[int, Message]] = ({}, {})
        self._missed = 0
        self._register()

    def _register(self) -> None:
        self._poller = zmq.Poller()
        self._poller.register(self.connection.receiver.socket, zmq.POLLIN)
        self._poller.register(self.second.receiver.socket, zmq.POLLIN)

    def next(self, timeout: float) -> StreamFrame | None:
        deadline = time.monotonic() + timeout
        receivers = (self.connection.receiver, self.second.receiver)
        while True:
            wait = math.ceil(max(0.0, deadline - time.monotonic()) * 1000)
            ready = dict(self._poller.poll(wait))
            if not ready:
                return None
            for side, receiver in enumerate(receivers):
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
            if len(mine) > self.window:
                del mine[min(mine)]
                self._missed += 1
            return None
        for pending in self._pending:  # ids older than a match will never match
            for pulse_id in [p for p in pending if p < message.pulse_id]:
                del pending[pulse_id]
                self._missed += 1
        first, second = (message, other) if side == 0 else (other, message)
        return StreamFrame(first, {**second.data, **first.data})

    def reconnect(self) -> None:
        super().reconnect()
        self.second.reconnect()
        self._register()

    @property
    def missed(self) -> int:
        return self._missed + self.connection.rejected + self.second.rejected

    def close(self) -> None:
        super().close()
        self.second.close()


class JoinedFrame:
    """A frame with the bsread data of its pulse id (`inner`: the input's own frame)."""

    __slots__ = ("inner", "pulse_id", "timestamp", "image", "bsdata")

    def __init__(self, inner, bsdata: dict):
        self.inner, self.bsdata = inner, bsdata
        self.pulse_id, self.timestamp, self.image = inner.pulse_id, inner.timestamp, inner.image


class HeldFrame:
    """A frame copied out of its input to wait for its bsread data."""

    __slots__ = ("pulse_id", "timestamp", "image", "axes", "extra")

    def __init__(self, frame, image: np.ndarray, axes, extra: dict):
        self.pulse_id, self.timestamp, self.image = frame.pulse_id, frame.timestamp, image
        self.axes, self.extra = axes, extra


class JoinedInput(Input):
    """A processing pipeline's frames joined with bsread data by pulse id (CamServer's
    `bsread_address` / `bsread_channels`). A frame whose data is there goes to the function
    at once, zero-copy, with the data's channels (and the frame's own channels beyond the
    camera's) as `bsdata`. A frame whose data has not come yet waits, copied (a ring slot
    cannot wait), up to `image_buf` frames (and HELD_BYTES); data waits up to `data_buf`
    messages. A frame whose pulse id the data stream passed without it is dropped, and so are
    frames pushed out of the full buffer: both count as missed."""

    def __init__(self, frames: Input, data: Connection, image_buf: int, data_buf: int):
        self.frames, self.data = frames, data
        self.image_buf, self.data_buf = image_buf, data_buf
        self.waiting: dict[int, dict] = {}  # bsread data by pulse id, oldest first
        self.held: collections.deque[HeldFrame] = collections.deque()
        self.held_bytes = 0
        self.newest_data = -1
        self._missed = 0

    @property
    def geometry(self):
        return self.frames.geometry

    def next(self, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            self._drain()
            frame = self._ready()
            if frame is not None:
                return frame
            wait = deadline - time.monotonic()
            if wait <= 0:
                return None
            frame = self.frames.next(min(wait, HELD_POLL) if self.held else wait)
            if frame is None:
                continue
            self._drain()
            bsdata = self.waiting.pop(frame.pulse_id, None)
            if bsdata is not None:
                return JoinedFrame(frame, bsdata)
            if frame.pulse_id <= self.newest_data:
                self._missed += 1  # the data stream passed this pulse id without it
            else:
                self._hold(frame)

    def _drain(self) -> None:
        """Take the bsread data that arrived, without waiting."""
        receiver = self.data.receiver
        while (message := receiver.receive(timeout=0)) is not None:
            self.waiting[message.pulse_id] = message.data
            self.newest_data = max(self.newest_data, message.pulse_id)
            if len(self.waiting) > self.data_buf:
                del self.waiting[next(iter(self.waiting))]

    def _ready(self) -> JoinedFrame | None:
        """The oldest held frame whose data came; held frames the data passed are dropped."""
        while self.held:
            frame = self.held[0]
            bsdata = self.waiting.pop(frame.pulse_id, None)
            if bsdata is None and frame.pulse_id > self.newest_data:
                return None
            self._unhold()
            if bsdata is not None:
                return JoinedFrame(frame, bsdata)
            self._missed += 1
        return None

    def _hold(self, frame) -> None:
        image = np.array(frame.image)
        axes = tuple(np.array(a) for a in self.frames.axes(frame))
        extra = dict(self.frames.channels(frame) or {})
        if not self.frames.valid(frame):
            return  # overwritten while copied: counted torn by the input
        while self.held and (
            len(self.held) >= self.image_buf or self.held_bytes + image.nbytes > HELD_BYTES
        ):
            self._unhold()
            self._missed += 1
        self.held.append(HeldFrame(frame, image, axes, extra))
        self.held_bytes += image.nbytes

    def _unhold(self) -> None:
        self.held_bytes -= self.held.popleft().image.nbytes

    def channels(self, frame) -> dict:
        """CamServer's bsdata: the bsread data's channels and the frame's own beyond the
        camera's (these win a clash)."""
        extra = frame.inner.extra if isinstance(frame.inner, HeldFrame) else None
        if extra is None:
            extra = self.frames.channels(frame.inner) or {}
        own = {k: v for k, v in extra.items() if k not in CAMERA_CHANNELS}
        return {**frame.bsdata, **own}

    def axes(self, frame):
        inner = frame.inner
        return inner.axes if isinstance(inner, HeldFrame) else self.frames.axes(inner)

    def valid(self, frame) -> bool:
        inner = frame.inner
        return isinstance(inner, HeldFrame) or self.frames.valid(inner)

    def detach(self, result: dict, frame) -> dict:
        inner = frame.inner
        return result if isinstance(inner, HeldFrame) else self.frames.detach(result, inner)

    def own(self, array: np.ndarray, frame) -> np.ndarray:
        inner = frame.inner
        return array if isinstance(inner, HeldFrame) else self.frames.own(array, inner)

    def skip_to_newest(self) -> None:
        self.frames.skip_to_newest()

    def reconnect(self) -> None:
        self.frames.reconnect()
        self.data.reconnect()

    @property
    def missed(self) -> int:
        return self._missed + self.frames.missed + self.data.rejected

    @property
    def torn(self) -> int:
        return self.frames.torn

    @property
    def lag(self) -> int:
        return self.frames.lag

    def close(self) -> None:
        self.frames.close()
        self.data.close()


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

    def skip_to_newest(self) -> None:
        """Ticks start now: the start-up is no backlog to catch up on."""
        self.pacer = Pacer(1.0 / self.pacer.period)


def open_input(spec: dict, config: dict, policy: str | None = None) -> Input:
    """The input a pipeline's config asks for; the supervisor resolved the addresses of
    cameras and pipelines into the spec's `input` (`stream`, `mode`, `stream2`, `mode2`; or
    `records`, the record ring of an upstream of this node). `policy`: how a camera's ring
    is read, if not as the config says (ring_policy)."""
    kind = pipeline_type(config)
    if kind == "custom":
        return Ticks(config.get("max_frame_rate") or CUSTOM_RATE)
    source = spec.get("input") or {}
    if source.get("records"):
        return RecordInput(source["records"])
    merge = pipeline_keys.merge(config)
    first = None
    if source.get("stream"):
        first = Connection(
            source["stream"],
            source.get("mode") or "SUB",
            merge.queue_size if merge else STREAM_QUEUE,
            raw=_keeps_images(kind, config),
            bind=bool(source.get("bind")),
        )
    elif kind == "stream":
        first = Connection(
            source=pipeline_keys.bsread_source(config), raw=_keeps_images(kind, config)
        )
    if first is None:
        frames = RingInput(spec["ring"], policy or ring_policy(config))
    elif merge is None:
        frames = StreamInput(first)
    else:
        second = _second(source, merge)
        frames = MergedInput(first, second, merge.buffer_size)
    join = pipeline_keys.join(config)
    if join is None:
        return frames
    try:
        data = Connection(source=join.source)
    except Exception:
        frames.close()
        raise
    return JoinedInput(frames, data, join.image_buf, join.data_buf)


def ring_policy(config: dict) -> str:
    """How a pipeline reads its camera's ring (RingInput): every frame where every frame
    matters (the DataBuffer feed, a file, a fanout's workers), else the recent ones."""
    if pipeline_type(config) in ("store", "fanout") or pipeline_keys.output(config).mode == "FILE":
        return "sequential"
    return "recent"


def _second(source: dict, merge: pipeline_keys.MergeKeys) -> Connection:
    if merge.source is not None:
        return Connection(queue_size=merge.queue_size, source=merge.source)
    return Connection(source["stream2"], source.get("mode2") or merge.mode, merge.queue_size)


def _keeps_images(kind: str, config: dict) -> bool:
    """A stream pipeline passing its input unchanged into a file whose images are
    bitshuffle-compressed stores compressed images as they arrive (no decompression)."""
    return (
        kind == "stream"
        and not config.get("function")
        and pipeline_keys.output(config).mode == "FILE"
        and (
            pipeline_keys.file(config).layout == "SHMCAM" or pipeline_keys.image_compressed(config)
        )
    )
