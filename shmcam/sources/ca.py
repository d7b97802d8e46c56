"""Channel Access plumbing of the EPICS camera sources (epics.py, area_detector.py).

pyepics is imported here, so only camera instances that use CA ever create a CA context; the
supervisor never does (docs/pitfalls.md). Monitors deliver in libca's thread: the image monitor's
callback builds the frame from the latest width, height and type values (CA delivers one
circuit's updates in order, and IOCs post those before the array) and hands it to read()
through a short queue whose oldest frame is dropped when full. pyepics hands every callback a
new array, which the camera may pass on without copying.

A lost IOC is searched for again by creating the channels anew with backoff: libca's own
search of a lost channel slows down to many seconds, and without a caRepeater (none ships
with pyepics) a restarted IOC's beacons go unheard. An IOC that is not there is an offline
camera, never an error: the camera waits for it.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import time

import numpy as np

from shmcam.restarts import RestartPolicy

from .base import Context, PulseCounter, Source, arrival_time

# Before libca starts: room for the largest frames (a 2560x2160 32-bit frame is 22 MB).
os.environ.setdefault("EPICS_CA_MAX_ARRAY_BYTES", str(64 << 20))

import epics  # noqa: E402  (libca reads the environment when it loads)

log = logging.getLogger(__name__)

QUEUE_FRAMES = 4
EPICS_EPOCH = 631152000  # 1990-01-01 in POSIX seconds: an IOC that sets no timestamps
UNSIGNED = {
    np.dtype(np.int8): np.uint8,
    np.dtype(np.int16): np.uint16,
    np.dtype(np.int32): np.uint32,
}


def not_initialized(prefix: str, state) -> str | None:
    """CamServer's message while `<prefix>:INIT` does not read INIT, else None."""
    if state == "INIT":
        return None
    return f"Camera with prefix {prefix} is not initialized ({prefix}:INIT is {state!r})"


def camera_problem(pvs: Pvs) -> str | None:
    """Why an EPICS camera with INIT, WIDTH and HEIGHT PVs is not ready, or None."""
    return pvs.offline() or not_initialized(pvs.prefix, pvs.value("init", as_string=True))


class Pvs:
    """Monitored PVs `<prefix><suffix>` by role, their latest values, and their search: while
    some stay unconnected, the channels are created anew at growing intervals (`retry`)."""

    def __init__(self, prefix: str, suffixes: dict[str, str], callbacks: dict | None = None):
        self.prefix = prefix
        self._suffixes = suffixes
        self._callbacks = callbacks or {}  # role -> callback of its own (with 'time' form)
        self._pvs: dict[str, epics.PV] = {}
        self._values: dict[str, tuple] = {}
        self._backoff = RestartPolicy()
        self._retry_at: float | None = None

    def connect(self) -> Pvs:
        """Create the channels (after the owner holds this object: callbacks may come at
        once, from libca's thread)."""
        self._connect()
        return self

    def value(self, role: str, as_string: bool = False):
        """The latest monitored value of a PV (as a string: an enum's name), None before the
        first update. Kept from the callbacks: pyepics' own properties may call CA, which
        blocks libca's thread when read from a callback."""
        value, text = self._values.get(role, (None, None))
        return text if as_string else value

    def _on_value(self, role: str, value=None, char_value=None, **_) -> None:
        self._values[role] = (value, char_value)

    def _connect(self) -> None:
        # 'ctrl' monitors carry enum strings; PVs with callbacks of their own need timestamps.
        self._values = {}
        for role, suffix in self._suffixes.items():
            callback = self._callbacks.get(role)
            self._pvs[role] = epics.PV(
                self.prefix + suffix,
                auto_monitor=True,
                form="ctrl" if callback is None else "time",
                callback=callback or functools.partial(self._on_value, role),
            )

    def _disconnect(self) -> None:
        for pv in self._pvs.values():
            chid = pv.chid
            pv.disconnect()  # keeps the CA channel, which keeps its slow search
            if chid is not None:
                epics.ca.clear_channel(chid)
        self._pvs.clear()

    def missing(self) -> list[str]:
        """PVs not connected, or connected without their first value: libca sometimes never
        delivers a monitor's first update (measured: INIT, 1 start in 8), and creating the
        channel again brings it."""
        return [
            pv.pvname
            for role, pv in self._pvs.items()
            if not pv.connected or (role not in self._callbacks and role not in self._values)
        ]

    def retry(self) -> None:
        """Re-create the channels while some stay unconnected, at growing intervals."""
        now = time.monotonic()
        if not self.missing():
            self._backoff.reset()
            self._retry_at = None
        elif self._retry_at is None:
            self._retry_at = now + self._backoff.next_delay()
        elif now >= self._retry_at:
            log.info("searching again for %s", ", ".join(self.missing()))
            self._disconnect()
            self._connect()
            self._retry_at = now + self._backoff.next_delay()

    def offline(self) -> str | None:
        """CamServer's offline message while some PV is not connected, else None."""
        missing = self.missing()
        if not missing:
            return None
        return f"Camera with prefix {self.prefix} is offline (not connected: {', '.join(missing)})"

    def close(self) -> None:
        self._disconnect()


class CaCamera(Source):
    """A camera made of monitored PVs `<source><suffix>`; subclasses name them in PVS (role ->
    suffix, with at least image, width and height) and say what is not ready, the pixel
    type and the pulse id."""

    PVS: dict[str, str] = {}

    def __init__(self, config: dict, context: Context | None = None):
        self.prefix = str(config["source"])
        self._frames: queue.Queue = queue.Queue(QUEUE_FRAMES)
        self._bad_size: tuple | None = None
        self._counter = PulseCounter()
        self.pvs = Pvs(self.prefix, self.PVS, {"image": self._on_image})
        self.pvs.connect()

    @classmethod
    def probe(cls, config: dict, context: Context, timeout: float) -> tuple[bool, str]:
        """Connect, wait up to timeout for the camera to be online, and say why not."""
        camera = cls(config, context)
        try:
            deadline = time.monotonic() + timeout
            while not camera.online and time.monotonic() < deadline:
                time.sleep(0.05)
            return camera.online, camera.reason
        finally:
            camera.close()

    # --- what subclasses decide ------------------------------------------------------------
    def not_ready(self) -> str | None:
        """Why connected PVs deliver no usable frames (camera not initialised, ...), or None."""
        return None

    def dtype(self, value: np.ndarray) -> np.dtype:
        """The pixel type of an array that arrived as value.dtype (CA has no unsigned types)."""
        return np.dtype(UNSIGNED.get(value.dtype, value.dtype))

    def pulse_id(self) -> int | None:
        """The frame's pulse id; None while the IOC's is not known yet (frame skipped).
        Without one from the IOC: counted, never reset by a reconnect."""
        return self._counter.next()

    def value(self, role: str, as_string: bool = False):
        return self.pvs.value(role, as_string)

    # --- frames ----------------------------------------------------------------------------
    def _on_image(self, value=None, posixseconds=0, nanoseconds=0, **_) -> None:
        try:
            image = self._image(value)
        except Exception:  # an exception would be lost in libca's thread
            log.exception("bad frame from %s", self.prefix)
            self.errors += 1
            return
        if image is None:
            return
        if posixseconds and posixseconds > EPICS_EPOCH:
            timestamp = (int(posixseconds), int(nanoseconds))
        else:
            timestamp = arrival_time()
        pulse_id = self.pulse_id()
        if pulse_id is not None:
            self._put((image, pulse_id, timestamp))

    def _image(self, value) -> np.ndarray | None:
        width, height = self.value("width"), self.value("height")
        if value is None or not width or not height or self.not_ready():
            return None
        width, height = int(width), int(height)
        if value.size != width * height:
            self.errors += 1
            if self._bad_size != (value.size, width, height):
                self._bad_size = (value.size, width, height)
                log.warning(
                    "%s: %d pixels do not make a %dx%d frame: skipped (counted as errors)",
                    self.prefix,
                    value.size,
                    width,
                    height,
                )
            return None
        dtype = self.dtype(value)
        value = value.view(dtype) if dtype.itemsize == value.dtype.itemsize else value.astype(dtype)
        return value.reshape(height, width)

    def _put(self, frame) -> None:
        while True:
            try:
                self._frames.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self._frames.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def read(self, timeout: float):
        self.pvs.retry()
        try:
            return self._frames.get(timeout=timeout)
        except queue.Empty:
            return None

    # --- state -----------------------------------------------------------------------------
    @property
    def online(self) -> bool:
        return not self.pvs.missing() and self.not_ready() is None

    @property
    def reason(self) -> str:
        return self.pvs.offline() or self.not_ready() or "connected"

    def close(self) -> None:
        self.pvs.close()
