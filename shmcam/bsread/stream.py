"""bsread over ZMQ: ``Sender`` (PUB or PUSH) and ``Receiver`` (SUB or PULL).

This is the only module of the package that imports zmq; the codec stays socket-free.

Whole messages or nothing. bsread's own sender sets NOBLOCK on every part, so a full PUSH
socket can drop the first parts of a message and queue the rest. ``Sender`` sends only the
first part without blocking. libzmq checks the high-water mark per message, not per part, so
once it accepts a first part it accepts the rest of that message (``tests/test_bsread_stream.py``
checks this). The later parts are sent without NOBLOCK: if that ever failed to hold, we would
wait rather than tear the message. If a PUSH peer disconnects in the middle of a message,
libzmq rolls the message back and drops it silently.

Zero copy and buffer reuse. Uncompressed arrays are handed to ZMQ by reference (parts of
64 KiB and more; smaller parts are copied). ZMQ reads that memory later, from its I/O
thread. A caller that overwrites the array before then (a shared-memory ring slot being
reused, say) sends torn data. Either keep the buffer untouched until ``sender.tracker``
(``track=True``) is done, or keep more ring slots than ZMQ can queue (``queue_size`` plus
one in flight), or send copies.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from .decoder import Decoder
from .encoder import Encoder
from .errors import BsreadError
from .message import Message

__all__ = ["Receiver", "Sender"]

log = logging.getLogger(__name__)

_SEND_MODES = {"PUB": zmq.PUB, "PUSH": zmq.PUSH}
_RECEIVE_MODES = {"SUB": zmq.SUB, "PULL": zmq.PULL}
_CLIENT_UP = zmq.EVENT_ACCEPTED | zmq.EVENT_CONNECTED
#: Retry period of the latest-wins thread for a message ZMQ refused. PUB sockets give no
#: "writable again" signal, so the thread cannot wait on the socket itself.
RETRY_INTERVAL = 0.002
_DEFAULT: Any = object()


def _new_socket(
    context: zmq.Context | None, mode: str, modes: Mapping[str, int], linger: float
) -> zmq.Socket:
    kind = modes.get(mode.upper())
    if kind is None:
        raise ValueError(f"mode {mode!r}: use one of {', '.join(modes)}")
    socket = (context or zmq.Context.instance()).socket(kind)
    socket.linger = int(linger * 1000)
    return socket


def _attach(socket: zmq.Socket, address: str, bind: bool) -> str:
    """Bind or connect; the address actually bound (port 0 or * gives a free port)."""
    if bind:
        socket.bind(address)
        return socket.last_endpoint.decode()
    socket.connect(address)
    return address


class Sender:
    """Sends bsread messages on a PUB or PUSH socket. Each message is queued whole or dropped whole.

    ``address`` is bound (default) or connected (``bind=False``). An int means
    ``tcp://*:<port>``; port 0 takes a free port, and ``address`` then reports the bound one.
    ``queue_size`` is ZMQ's send high-water mark in messages.

    ``block=False`` (default) drops a message when ZMQ's queue is full; ``block=True`` waits,
    for up to ``send_timeout`` seconds if given. A PUB socket never waits and never reports a
    full queue: it drops silently, per subscriber. ``sent`` and ``dropped`` count messages.

    ``latest_wins=True`` is for live consumers: a slow client gets the newest message, not the
    oldest. ZMQ's queue holds one message (SNDHWM=1) and one more waits here. A newer message
    replaces it (counted as dropped), and a small thread hands it to ZMQ as soon as ZMQ takes
    it. On PUB this sets ZMQ_XPUB_NODROP, because otherwise ZMQ drops silently and we never
    learn that the queue is full. So every subscriber gets the newest message at the pace of
    the slowest one.

    ``clients`` counts connected peers (TCP/IPC) from a ZMQ socket monitor, which is read on
    each send and each property access (no thread). ``seconds_without_clients`` lets an
    instance stop after a ``no_client_timeout``.

    ``track=True`` puts a ``zmq.MessageTracker`` of the last queued message in ``tracker``.
    It is done when ZMQ no longer references the message's buffers (see module docstring).
    """

    def __init__(
        self,
        address: str | int = "tcp://*:9999",
        *,
        mode: str = "PUB",
        bind: bool = True,
        queue_size: int = 10,
        block: bool = False,
        send_timeout: float | None = None,
        latest_wins: bool = False,
        track: bool = False,
        encoder: Encoder | None = None,
        linger: float = 1.0,
        context: zmq.Context | None = None,
    ) -> None:
        if latest_wins and (block or track):
            raise ValueError("latest_wins sends from its own thread: it cannot block or track")
        self.encoder = encoder or Encoder()
        self.sent = 0
        self.dropped = 0
        self.tracker: zmq.MessageTracker | None = None
        self._flags = 0 if block else zmq.NOBLOCK
        self._track = track
        self._closed = False
        self._clients = 0
        self._idle_since = time.monotonic()
        self._monitor_lock = threading.Lock()
        self._socket = _new_socket(context, mode, _SEND_MODES, linger)
        self._socket.sndhwm = 1 if latest_wins else queue_size
        if latest_wins and self._socket.type == zmq.PUB:
            self._socket.setsockopt(zmq.XPUB_NODROP, 1)
        if block and send_timeout is not None:
            self._socket.sndtimeo = int(send_timeout * 1000)
        # The monitor starts before bind/connect, so that no connection goes uncounted.
        self._monitor = self._socket.get_monitor_socket(_CLIENT_UP | zmq.EVENT_DISCONNECTED)
        try:
            self.address = _attach(
                self._socket, f"tcp://*:{address}" if isinstance(address, int) else address, bind
            )
        except zmq.ZMQError:
            self._socket.disable_monitor()
            self._monitor.close(linger=0)
            self._socket.close(linger=0)
            raise
        self._worker: threading.Thread | None = None
        if latest_wins:
            self._pending: Sequence[Any] | None = None
            self._stopping = False
            self._wakeup = threading.Condition()
            self._worker = threading.Thread(
                target=self._run_latest, name=f"bsread {self.address}", daemon=True
            )
            self._worker.start()

    def send(
        self, data: Mapping[str, Any], pulse_id: int, timestamp: tuple[int, int] | float
    ) -> bool:
        """Encode and send one message (see ``Encoder.encode``); False if it was dropped."""
        return self.send_parts(self.encoder.encode(data, pulse_id, timestamp))

    def send_parts(self, parts: Sequence[Any]) -> bool:
        """Send already encoded parts (e.g. forwarded from a ``Receiver``); False if dropped.

        With latest_wins, True means the message waits for ZMQ. A newer one can still replace it.
        """
        if self._closed:
            raise RuntimeError("send on a closed Sender")
        if self._monitor_lock.acquire(blocking=False):  # never wait behind wait_for_clients
            try:
                self._read_monitor()
            finally:
                self._monitor_lock.release()
        if self._worker is not None:
            with self._wakeup:
                if self._pending is not None:
                    self.dropped += 1
                self._pending = parts
                self._wakeup.notify()
            return True
        if self._queue(parts, self._flags):
            return True
        self.dropped += 1
        return False

    def bind(self, address: str) -> str:
        """Bind one more endpoint (e.g. ipc:// beside tcp://): the same stream, its clients
        counted with the others; the address actually bound."""
        return _attach(self._socket, address, bind=True)

    @property
    def clients(self) -> int:
        """Peers connected now."""
        with self._monitor_lock:
            self._read_monitor()
        return self._clients

    @property
    def seconds_without_clients(self) -> float:
        """Seconds since the last peer left (or since creation); 0.0 while a peer is connected."""
        return 0.0 if self.clients else time.monotonic() - self._idle_since

    def wait_for_clients(self, count: int, timeout: float) -> bool:
        """Wait until exactly ``count`` peers are connected; False if ``timeout`` seconds pass
        first."""
        deadline = time.monotonic() + timeout
        with self._monitor_lock:
            while True:
                self._read_monitor()
                remaining = deadline - time.monotonic()
                if self._clients == count or remaining <= 0 or self._closed:
                    return self._clients == count
                self._monitor.poll(remaining * 1000)

    def close(self) -> None:
        """Stop the latest-wins thread (its waiting message counts as dropped) and close the
        sockets."""
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            with self._wakeup:
                self._stopping = True
                if self._pending is not None:
                    self.dropped += 1
                    self._pending = None
                self._wakeup.notify()
            self._worker.join()
        with self._monitor_lock:
            self._socket.disable_monitor()
            self._monitor.close(linger=0)
        self._socket.close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _queue(self, parts: Sequence[Any], first_flags: int) -> bool:
        """Hand one message to ZMQ: False, with nothing queued, if ZMQ refuses its first part."""
        socket, track, last = self._socket, self._track, len(parts) - 1
        try:
            trackers = [
                socket.send(
                    parts[0], first_flags | (zmq.SNDMORE if last else 0), copy=False, track=track
                )
            ]
        except zmq.Again:
            return False
        for index in range(1, last + 1):
            trackers.append(
                socket.send(
                    parts[index], zmq.SNDMORE if index < last else 0, copy=False, track=track
                )
            )
        self.sent += 1
        if track:
            self.tracker = zmq.MessageTracker(*trackers)
        return True

    def _read_monitor(self) -> None:
        """Apply the monitor's pending connect/disconnect events (caller holds the lock)."""
        while not self._closed and self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            if event & _CLIENT_UP:
                self._clients += 1
            elif event & zmq.EVENT_DISCONNECTED and self._clients:
                self._clients -= 1
                if not self._clients:
                    self._idle_since = time.monotonic()

    def _run_latest(self) -> None:
        """Latest-wins thread: move the waiting message into ZMQ whenever ZMQ takes one."""
        while True:
            with self._wakeup:
                while self._pending is None and not self._stopping:
                    self._wakeup.wait()
                if self._stopping:
                    return
                parts, self._pending = self._pending, None
            if self._queue(parts, zmq.NOBLOCK):
                continue
            with self._wakeup:  # ZMQ is full: retry later, unless a newer message came meanwhile
                if self._pending is None:
                    self._pending = parts
                else:
                    self.dropped += 1
                self._wakeup.wait(RETRY_INTERVAL)


class Receiver:
    """Receives bsread messages on a SUB (subscribed to everything) or PULL socket.

    Connects by default; ``bind=True`` is for fan-in. ``queue_size`` is ZMQ's receive
    high-water mark. ``timeout`` (seconds, None for ever) is how long ``receive`` waits.
    Frames are received without copying and decoded in place: arrays are views of them.
    A message that cannot be decoded is logged at warning level, counted in ``rejected`` and
    skipped. ``received`` counts the messages returned.
    """

    def __init__(
        self,
        address: str,
        *,
        mode: str = "SUB",
        bind: bool = False,
        queue_size: int = 100,
        timeout: float | None = 1.0,
        decoder: Decoder | None = None,
        linger: float = 1.0,
        context: zmq.Context | None = None,
    ) -> None:
        self.decoder = decoder or Decoder()
        self.timeout = timeout
        self.received = 0
        self.rejected = 0
        self._socket = _new_socket(context, mode, _RECEIVE_MODES, linger)
        self._socket.rcvhwm = queue_size
        if self._socket.type == zmq.SUB:
            self._socket.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            self.address = _attach(self._socket, address, bind)
        except zmq.ZMQError:
            self._socket.close(linger=0)
            raise

    @property
    def socket(self) -> zmq.Socket:
        """The ZMQ socket, for polling several receivers at once."""
        return self._socket

    def receive(self, timeout: float | None = _DEFAULT) -> Message | None:
        """The next decodable message, or None when ``timeout`` (default: the receiver's) passes."""
        timeout = self.timeout if timeout is _DEFAULT else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = (
                None
                if deadline is None
                else math.ceil(max(0.0, deadline - time.monotonic()) * 1000)
            )
            if not self._socket.poll(wait):
                return None
            parts = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
            try:
                message = self.decoder.decode(parts)
            except BsreadError as error:
                self.rejected += 1
                log.warning(
                    "%s: rejected a message of %d parts: %s", self.address, len(parts), error
                )
                continue
            self.received += 1
            return message

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._socket.close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
