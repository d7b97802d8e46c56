"""Where a pipeline's results go: its bsread stream (PUB or PUSH) or an HDF5 file (FILE mode,
file_output.py), with CamServer's output keys (pipeline_keys.OutputKeys); and its record ring
while something on the node reads it there (a cascade, an external program).

The stream: `include` (absent channels sent as None, CamServer's way), `exclude`,
compression, `create_header`, `allow_type_changes`/`allow_shape_changes` (a channel whose type
or shape changed is sent as None), `queue_size`, `block` (with a bounded wait: SEND_TIMEOUT),
`output_stream` (connect instead of bind) and `buffer_size` (a send thread: results wait in a
buffer, and on a PUSH stream they wait for a client, so one that connects late gets what was
produced before). Without a buffer a PUSH stream with no client sends nothing and drops
nothing: no client asked for the frame (a PUB stream has ZMQ discard it the same way).
"""

from __future__ import annotations

import collections
import logging
import struct
import threading

import numpy as np

from shmcam.bsread import Compressed, Encoder, Sender
from shmcam.shm import RecordWriter, ShmError, StatsBlock

from . import pipeline_keys
from .pipeline_keys import OutputKeys

log = logging.getLogger(__name__)

SEND_TIMEOUT = 1.0  # s a blocking send waits for a slow client before it drops the message
CLIENT_POLL = 0.05  # s between looks for a client, while buffered messages wait for one


def select(result: dict, keys: OutputKeys) -> dict:
    """The channels `include` asks for (None where the result has none: CamServer's
    rule; bsread leaves out a None channel until it had a value) minus `exclude`."""
    if keys.include:
        result = {name: result.get(name) for name in keys.include}
    if keys.exclude:
        result = {k: v for k, v in result.items() if k not in keys.exclude}
    return result


def _format(value) -> tuple:
    """(type, shape) of a channel value, numbers of one kind counted alike as CamServer's
    header does (every integer is an int, every float a float)."""
    if isinstance(value, (Compressed, np.ndarray)):
        return value.dtype.kind, value.shape
    if isinstance(value, (bool, np.bool_)):
        return "b", ()
    if isinstance(value, (int, np.integer)):
        return "i", ()
    if isinstance(value, (float, np.floating)):
        return "f", ()
    if isinstance(value, (list, tuple)):
        return "l", (len(value),)
    return type(value).__name__, ()


class ChangeGuard:
    """allow_type_changes / allow_shape_changes false: a channel whose type (or shape)
    differs from its first value's is sent as None."""

    def __init__(self, keys: OutputKeys):
        self.types, self.shapes = not keys.allow_type_changes, not keys.allow_shape_changes
        self.first: dict[str, tuple] = {}

    @property
    def active(self) -> bool:
        return self.types or self.shapes

    def __call__(self, result: dict) -> dict:
        for name, value in result.items():
            if value is None:
                continue
            kind, shape = _format(value)
            first = self.first.setdefault(name, (kind, shape))
            if (self.types and kind != first[0]) or (self.shapes and shape != first[1]):
                result[name] = None
        return result


class SendThread:
    """buffer_size: results wait (the oldest dropped when `size` wait) for a thread that sends
    them; with `hold`, only while a client is connected (a PUSH stream's late client gets
    them)."""

    def __init__(self, send, clients, size: int, hold: bool):
        self.send, self.clients, self.hold = send, clients, hold
        self.items: collections.deque = collections.deque()
        self.size = size
        self.dropped = 0
        self.stopping = False
        self.wakeup = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="send", daemon=True)
        self.thread.start()

    def put(self, item: tuple) -> None:
        with self.wakeup:
            if len(self.items) >= self.size:
                self.items.popleft()
                self.dropped += 1
            self.items.append(item)
            self.wakeup.notify()

    def _run(self) -> None:
        while True:
            with self.wakeup:
                while not self.stopping and not self.items:
                    self.wakeup.wait()
                if self.stopping:
                    return
            if self.hold and not self.clients():
                with self.wakeup:
                    self.wakeup.wait(CLIENT_POLL)
                continue
            with self.wakeup:
                item = self.items.popleft() if self.items else None
            if item is not None:
                self.send(*item)

    def close(self) -> None:
        with self.wakeup:
            self.stopping = True
            self.dropped += len(self.items)
            self.items.clear()
            self.wakeup.notify()
        self.thread.join()


class Output:
    """What both outputs share: the keys that may change on a running instance, and
    `tracker`: ZMQ's tracker of the last message sent, for results sent without a copy from
    memory that is reused once ZMQ is done with it (None: nothing to wait for)."""

    tracker = None

    def __init__(self, keys: OutputKeys):
        self.keys = keys
        self.guard = ChangeGuard(keys)

    def apply(self, config: dict) -> None:
        """include, exclude and the allow_* keys (a changed allow_* starts afresh)."""
        keys = pipeline_keys.output(config)
        allowed = (keys.allow_type_changes, keys.allow_shape_changes)
        if allowed != (self.keys.allow_type_changes, self.keys.allow_shape_changes):
            self.guard = ChangeGuard(keys)
        self.keys = keys


class StreamOutput(Output):
    """The pipeline's bsread stream; `track`: keep ZMQ's tracker of the last message."""

    def __init__(self, spec: dict, keys: OutputKeys, stats: StatsBlock, track: bool = False):
        super().__init__(keys)
        self.stats = stats
        self.push = keys.mode == "PUSH"
        connect = (spec.get("output") or {}).get("stream") or keys.connect
        self.sender = Sender(
            connect or spec["port"],
            mode=keys.mode,
            bind=connect is None,
            track=track,
            queue_size=keys.queue_size,
            block=keys.block,
            send_timeout=SEND_TIMEOUT,
            encoder=Encoder(
                keys.compression, keys.header_compression, create_header=keys.create_header
            ),
        )
        self.thread = None
        if keys.buffer_size:
            self.thread = SendThread(
                self._send, lambda: self.sender.clients, keys.buffer_size, hold=self.push
            )
        self._errors_logged = 0

    def send(self, result: dict, pulse_id: int, timestamp) -> bool:
        """Send a result (selected already: `select`), or hand it to the send thread; False
        if it was not sent."""
        if self.guard.active:
            result = self.guard(result)
        if self.thread is not None:
            self.thread.put((result, pulse_id, timestamp))
            return True
        if self.push and not self.sender.clients:
            return False
        return self._send(result, pulse_id, timestamp)

    def _send(self, result: dict, pulse_id: int, timestamp) -> bool:
        try:
            return self.sender.send(result, pulse_id, timestamp)
        except (TypeError, ValueError) as error:  # a result bsread cannot carry, or
            self.stats.add("errors")  # a format change under create_header once
            if self._errors_logged < 10:
                self._errors_logged += 1
                log.error("pulse %d not sent: %s", pulse_id, error)
            return False

    @property
    def tracker(self):
        return self.sender.tracker

    def ready(self) -> dict:
        return {}

    def periodic(self) -> None:
        pass

    def counters(self) -> dict:
        return {
            "clients": self.sender.clients,
            "dropped": self.sender.dropped + (self.thread.dropped if self.thread else 0),
            "header_changes": self.sender.encoder.header_changes,
        }

    def close(self, end_reason: str = "stopped") -> None:
        if self.thread is not None:
            self.thread.close()
        self.sender.close()


def open_output(spec: dict, config: dict, stats: StatsBlock, track: bool = False):
    """The output the config asks for: a stream, or (FILE mode) an HDF5 file."""
    keys = pipeline_keys.output(config)
    if keys.mode == "FILE":
        from .file_output import FileOutput  # HDF5 is imported only by the pipelines writing it

        return FileOutput(spec, config, stats)
    return StreamOutput(spec, keys, stats, track)


class RecordOutput:
    """The pipeline's record ring (`shmcam.<node>.<instance>.out`), written only while the
    supervisor says a local reader needs it (`follow`): a copy of every result costs the
    pipeline a memcpy of its image, which only readers on the node justify. The supervisor
    owns the ring: it creates it before the first reader attaches and removes it with the
    instance; a writer that stops leaves its generation closed for the next one."""

    def __init__(self, base: str | None, stats: StatsBlock):
        self.base = base
        self.stats = stats
        self.writer: RecordWriter | None = None
        self._errors_logged = 0

    def follow(self, wanted: bool) -> None:
        """Start or stop writing, as the supervisor asks."""
        if wanted and self.writer is None and self.base:
            self.writer = RecordWriter(self.base)
        elif not wanted and self.writer is not None:
            self.close()

    def write(self, result: dict, pulse_id: int, timestamp) -> None:
        if self.writer is None:
            return
        try:
            self.writer.write(pulse_id, timestamp, result)
        except (TypeError, ValueError, ShmError, OSError, struct.error) as error:
            self.stats.add("errors")  # a value a record cannot hold, /dev/shm full
            if self._errors_logged < 10:
                self._errors_logged += 1
                log.error("pulse %d not written to the record ring: %s", pulse_id, error)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close(unlink=False)
            self.writer = None
