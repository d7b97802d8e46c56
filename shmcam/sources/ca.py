"""Channel Access plumbing of the EPICS camera sources (epics.py, area_detector.py).

pyepics is imported here, so only camera instances that use CA ever create a CA context; the
supervisor never does (docs/pitfalls.md). Monitors deliver in libca's thread: the image monitor's
callback builds the frame from the latest width, height and type values (CA delivers one
circuit's updates in order, and IOCs post those before the array) and hands it to read()
through a short queue whose oldest frame is dropped when full. pyepics hands every callback a
new array, which the camera may pass on without copying.

A lost IOC is searched for again by creating the channels anew with backoff: libca's own
search of a lost channel slows down to many seconds, and without a caRepeater (none ships
with pyepics) a restarted IOC's beacons go unheard.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import time

import numpy as np

from shmcam.restarts import RestartPolicy

from .base import PulseCounter, Source, arrival_time

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


class CaCamera(Source):
    """A camera made of monitored PVs `<source><suffix>`; subclasses name them in PVS (role ->
    suffix, with at least image, width and height) and say what is not ready, the pixel
    type and the pulse id."""

    PVS: dict[str, str] = {}

    def __init__(self, config: dict):
        self.prefix = str(config["source"])
        self._frames: queue.Queue = queue.Queue(QUEUE_FRAMES)
        self._pvs: dict[str, epics.PV] = {}
        self._backoff = RestartPolicy()
        self._retry_at: float | None = None
        self._bad_size: tuple | None = None
        self._counter = PulseCounter()
        self._connect()

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

    # --- channels --------------------------------------------------------------------------
    def value(self, role: str, as_string: bool = False):
        """The latest monitored value of a PV (as a string: an enum's name), None before the
        first update. Kept from the callbacks: pyepics' own properties may call CA, which
        blocks libca's thread when read from a callback."""
        value, text = self._values.get(role, (None, None))
        return text if as_string else value

    def _on_value(self, role: str, value=None, char_value=None, **_) -> None:
        self._values[role] = (value, char_value)

    def _connect(self) -> None:
        # 'ctrl' monitors carry enum strings; only the image needs the IOC's timestamp.
        self._values: dict[str, tuple] = {}
        for role, suffix in self.PVS.items():
            image = role == "image"
            self._pvs[role] = epics.PV(
                self.prefix + suffix,
                auto_monitor=True,
                form="time" if image else "ctrl",
                callback=self._on_image if image else functools.partial(self._on_value, role),
            )

    def _disconnect(self) -> None:
        for pv in self._pvs.values():
            chid = pv.chid
            pv.disconnect()  # keeps the CA channel, which keeps its slow search
            if chid is not None:
                epics.ca.clear_channel(chid)
        self._pvs.clear()

    def missing(self) -> list[str]:
        return [pv.pvname for pv in self._pvs.values() if not pv.connected]

    def _retry(self) -> None:
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
        self._retry()
        try:
            return self._frames.get(timeout=timeout)
        except queue.Empty:
            return None

    # --- state -----------------------------------------------------------------------------
    @property
    def online(self) -> bool:
        return not self.missing() and self.not_ready() is None

    @property
    def reason(self) -> str:
        missing = self.missing()
        if missing:
            return f"not connected: {', '.join(missing)}"
        return self.not_ready() or "connected"

    def close(self) -> None:
        self._disconnect()
