"""CamServer's `bsread` camera: an EPICS camera whose frames come as a bsread stream.

`source` is the camera's PV prefix. The stream address is `url`, or else the value of the PV
`<prefix>:BSREADCONFIG`; the camera PUSHes, shmcam PULLs over `connections` sockets. The image
channel is `<camera name>:FPICTURE`; width and height are `<prefix>:WIDTH` and `:HEIGHT` (a
frame of another size is counted as an error and skipped), and `<prefix>:INIT` must read INIT,
as for an `epics` camera. Pulse ids and global timestamps are the stream's. With `buffer_size`,
frames of all connections are put back in pulse-id order: the lowest goes out once it is the
next expected one, or once the buffer holds more than `buffer_threshold` of its size. Frames
whose pulse id (`enforce_pid`) or timestamp (`enforce_timestamp`) does not grow are dropped;
with `check_timestamp`, so are frames whose timestamp's nanoseconds do not carry the pulse id
(pulse_id % 10**6 == ns % 10**6, SwissFEL's timing). Unlike CamServer, which stops a bsread
camera after 10 s of bad frames, the camera stays up and reports why it gets no frames.

`bsread_simulation` is the same without EPICS: `<source>:FPICTURE` from CamServer's bsread
simulation at tcp://127.0.0.1:9999 (or `url`), the frame size that of the frames.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import zmq

from shmcam.bsread import Receiver

from .base import Context, Source
from .config import BSREAD_SIMULATION_URL

log = logging.getLogger(__name__)

RECONNECT_MAX_MS = 5000
SILENCE = 10.0  # seconds without a message before the camera reports offline
EPICS_PVS = {"init": ":INIT", "width": ":WIDTH", "height": ":HEIGHT"}
ADDRESS_PV = ":BSREADCONFIG"


class PulseSorter:
    """Frames put back in pulse-id order (CamServer's bsread `buffer_size`)."""

    def __init__(self, size: int, threshold: float):
        self.size = size
        self.threshold = int(size * threshold)
        self.frames: dict[int, tuple] = {}
        self.last: int | None = None
        self.step = 1  # the pulse-id step of the stream, learnt from the frames sent
        self.dropped = 0  # frames that came after a later one had gone out, or overflowed

    def push(self, pulse_id: int, frame: tuple) -> None:
        if self.last is not None and pulse_id <= self.last:
            self.dropped += 1
            return
        self.frames[pulse_id] = frame
        if len(self.frames) > self.size:
            del self.frames[min(self.frames)]
            self.dropped += 1

    def pop(self) -> tuple | None:
        if not self.frames:
            return None
        pulse_id = min(self.frames)
        last = self.last
        if last is not None and pulse_id > last + self.step and len(self.frames) <= self.threshold:
            return None
        if last is not None:
            self.step = pulse_id - last
        self.last = pulse_id
        return self.frames.pop(pulse_id)


class BsreadCamera(Source):
    def __init__(self, config: dict, context: Context):
        self.simulation = config["source_type"] == "bsread_simulation"
        self.prefix = str(config["source"])
        self.channel = f"{self.prefix if self.simulation else context.camera}:FPICTURE"
        self.url = config.get("url") or (BSREAD_SIMULATION_URL if self.simulation else None)
        self.connections = config.get("connections") or 1
        size = config.get("buffer_size") or 0
        self.sorter = PulseSorter(size, config.get("buffer_threshold", 0.5)) if size else None
        self.enforce_pid = config.get("enforce_pid", True)
        self.enforce_timestamp = config.get("enforce_timestamp", True)
        self.check_timestamp = config.get("check_timestamp", True)
        self.pvs = self._epics_problem = None
        if not self.simulation:
            from .ca import Pvs, camera_problem  # pyepics only in cameras that use it

            self._epics_problem = camera_problem
            roles = dict(EPICS_PVS) if self.url else {**EPICS_PVS, "address": ADDRESS_PV}
            self.pvs = Pvs(self.prefix, roles).connect()
        self._context = zmq.Context()
        self._context.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
        self._poller = zmq.Poller()
        self._receivers: list[Receiver] = []
        self._address = None  # the stream connected to
        self._next = 0  # the receiver read first next time (round robin)
        self._last = None  # monotonic time of the last message
        self._sent = (None, None)  # pulse id and timestamp of the last frame handed over
        self._skipped = 0
        self._why = None

    @classmethod
    def probe(cls, config: dict, context: Context, timeout: float) -> tuple[bool, str]:
        """The EPICS camera's state (CamServer checks INIT); the stream is not touched."""
        if config["source_type"] == "bsread_simulation":
            return super().probe(config, context, timeout)
        from .ca import Pvs, camera_problem

        pvs = Pvs(str(config["source"]), EPICS_PVS).connect()
        try:
            deadline = time.monotonic() + timeout
            while camera_problem(pvs) and time.monotonic() < deadline:
                time.sleep(0.05)
            why = camera_problem(pvs)
            return why is None, why or "connected"
        finally:
            pvs.close()

    # --- the stream ------------------------------------------------------------------------
    def _stream_address(self) -> str | None:
        if self.url:
            return self.url
        value = self.pvs.value("address", as_string=True)
        return value.strip() if isinstance(value, str) and "://" in value else None

    def _connect(self, address: str | None) -> None:
        for receiver in self._receivers:
            self._poller.unregister(receiver.socket)
            receiver.close()
        self._receivers = []
        self._address = address
        if address is None:
            return
        log.info("%s: %d connection(s) to %s", self.prefix, self.connections, address)
        for _ in range(self.connections):
            receiver = Receiver(address, mode="PULL", context=self._context, linger=0)
            self._receivers.append(receiver)
            self._poller.register(receiver.socket, zmq.POLLIN)

    def _receive(self, timeout: float):
        """The next message of any connection, or None after timeout."""
        ready = dict(self._poller.poll(timeout * 1000))
        count = len(self._receivers)
        for i in range(count):
            receiver = self._receivers[(self._next + i) % count]
            if receiver.socket in ready:
                self._next = (self._next + i + 1) % count
                message = receiver.receive(0)
                if message is not None:
                    return message
        return None

    def read(self, timeout: float):
        if self.pvs is not None:
            self.pvs.retry()
        address = self._stream_address()
        if address != self._address:
            self._connect(address)
        if address is None:
            time.sleep(timeout)
            return None
        if self.sorter is None:
            message = self._receive(timeout)
            return None if message is None else self._accept(self._frame(message))
        self._drain(0)
        frame = self.sorter.pop()
        if frame is None:
            self._drain(timeout)
            frame = self.sorter.pop()
        return None if frame is None else self._accept(frame)

    def _drain(self, timeout: float) -> None:
        """Everything that has come (waiting up to timeout for the first) into the sorter."""
        message = self._receive(timeout)
        while message is not None:
            frame = self._frame(message)
            if frame is not None:
                self.sorter.push(frame[1], frame)
            message = self._receive(0)

    # --- frames ----------------------------------------------------------------------------
    def _frame(self, message):
        self._last = time.monotonic()
        image = self._image(message.data.get(self.channel))
        return None if image is None else (image, message.pulse_id, message.global_timestamp)

    def _image(self, image) -> np.ndarray | None:
        if not isinstance(image, np.ndarray) or image.ndim not in (1, 2):
            return self._skip(f"no 1-D or 2-D channel {self.channel} in the message")
        if self.pvs is None:
            if image.ndim == 2:
                return image
            return self._skip(f"{self.channel} is flat")
        width, height = self.pvs.value("width"), self.pvs.value("height")
        problem = self._epics_problem(self.pvs)
        if problem or not width or not height:
            return self._skip(problem or f"no size of {self.prefix} yet")
        shape = (int(height), int(width))
        if image.ndim == 1 and image.size == shape[0] * shape[1]:
            return image.reshape(shape)
        if image.shape != shape:
            return self._skip(
                f"{self.channel} of shape {image.shape} while {self.prefix}:WIDTH and :HEIGHT "
                f"say {shape[1]}x{shape[0]}"
            )
        return image

    def _accept(self, frame):
        """The frame, unless the pulse-id and timestamp checks drop it."""
        if frame is None:
            return None
        _, pulse_id, timestamp = frame
        last_pulse_id, last_timestamp = self._sent
        if self.check_timestamp and pulse_id % 1_000_000 != timestamp[1] % 1_000_000:
            return self._skip(f"timestamp {timestamp} does not carry pulse id {pulse_id}")
        if (self.enforce_pid and last_pulse_id is not None and pulse_id <= last_pulse_id) or (
            self.enforce_timestamp and last_timestamp is not None and timestamp <= last_timestamp
        ):
            self.dropped += 1
            return None
        self._sent = (pulse_id, timestamp)
        self._why = None
        return frame

    def _skip(self, why: str) -> None:
        if why != self._why:
            self._why = why
            log.warning("%s: frame skipped (counted as an error): %s", self.prefix, why)
        self._skipped += 1
        return None

    # --- state -----------------------------------------------------------------------------
    @property
    def errors(self) -> int:
        return self._skipped + sum(r.rejected for r in self._receivers)

    @property
    def online(self) -> bool:
        return self._problem() is None

    @property
    def reason(self) -> str:
        return self._problem() or f"receiving from {self._address}"

    def _problem(self) -> str | None:
        why = None if self.pvs is None else self._epics_problem(self.pvs)
        if why is not None:
            return why
        if self._address is None:
            return f"Could not fetch bsread stream address for cam_server:{self.prefix}"
        if self._last is None:
            return f"waiting for the first message from {self._address}"
        silent = time.monotonic() - self._last
        if silent >= SILENCE:
            return f"no message from {self._address} for {silent:.0f} s"
        return None

    def close(self) -> None:
        self._connect(None)
        self._context.term()
        if self.pvs is not None:
            self.pvs.close()
