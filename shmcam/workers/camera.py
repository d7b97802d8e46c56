"""Camera instance: the one connection to a camera source; writes every frame once into the ring.

Frames are transformed here (binning, mirror, rotate, roi, background: sources/transforms.py),
once for all pipelines, and written with their pulse id, timestamp and linear axes. A geometry
change (camera resized) opens a new ring generation, which readers follow. The instance
outlives its source: it reports `{"online": ..., "reason": ...}` on every change, and the
source reconnects or is created again with backoff.

It also publishes the camera's own bsread stream (CamServer's channels and header), but encodes
and sends only while a client is connected: local pipelines read the ring instead.
"""

from __future__ import annotations

import functools
import importlib
import logging
import time
from pathlib import Path

import numpy as np

from shmcam.bsread import Encoder, Sender
from shmcam.bsread.types import bsread_type
from shmcam.shm import RingWriter, StatsBlock
from shmcam.sources.retry import RetryingSource
from shmcam.sources.transforms import CameraTransform, axis_arrays

from .control import Control, report

log = logging.getLogger(__name__)

# Imported only by the cameras that use them: pyepics and h5py stay out of other processes.
SOURCES = {
    "simulation": "shmcam.sources.simulation:SimulationSource",
    "epics": "shmcam.sources.epics:EpicsSource",
    "area_detector": "shmcam.sources.area_detector:AreaDetectorSource",
    "bsread": "shmcam.sources.bsread_source:BsreadSource",
    "hdf5": "shmcam.sources.hdf5:Hdf5Source",
    "script": "shmcam.sources.script:ScriptSource",
}
STATS_PERIOD = 0.5


def data_dir(spec: dict, key: str, folder: str) -> Path:
    """A folder of the node's data directory: from the spec, else beside `scripts_dir`."""
    return Path(spec.get(key) or Path(spec["scripts_dir"]).parent / folder)


def source_factory(config: dict, spec: dict):
    """A callable that creates the config's source (imported on first use)."""
    source_type = config.get("source_type") or "simulation"
    if source_type not in SOURCES:
        raise ValueError(
            f"unknown source_type {source_type!r}; available here: {', '.join(SOURCES)}"
        )
    module, name = SOURCES[source_type].split(":")
    cls = getattr(importlib.import_module(module), name)
    if source_type == "script":
        return functools.partial(
            cls, config, data_dir(spec, "camera_scripts_dir", "camera_scripts")
        )
    return functools.partial(cls, config)


def load_background(config: dict, spec: dict) -> np.ndarray | None:
    """The stored background `image_background` names, loaded once per config."""
    background_id = config.get("image_background")
    if not background_id:
        return None
    path = data_dir(spec, "backgrounds_dir", "backgrounds") / f"{background_id}.npy"
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"image_background: no stored background {background_id!r}") from None


def camera_encoder(image: np.ndarray) -> Encoder:
    """CamServer's camera stream header: its channels, order, types and metadata style."""
    height, width = image.shape[:2]
    return Encoder(
        channel_meta={
            "width": {"compression": None, "type": "int64"},
            "height": {"compression": None, "type": "int64"},
            "timestamp": {"compression": None, "type": "float64"},
            "image": {
                "compression": None,
                "shape": [width, height],
                "type": bsread_type(image.dtype),
            },
            "x_axis": {"compression": None, "shape": [width], "type": "float32"},
            "y_axis": {"compression": None, "shape": [height], "type": "float32"},
        }
    )


class CameraStream:
    """The camera's bsread stream; header and axis arrays rebuilt only when geometry or axes
    change, never per frame."""

    def __init__(self, port: int):
        self.sender = Sender(port, mode="PUB", queue_size=100)
        self._geometry = self._axes_key = self._axes = None
        self._retired_changes = 0  # header changes of the encoders of earlier geometries

    @property
    def header_changes(self) -> int:
        return self._retired_changes + self.sender.encoder.header_changes

    def send(self, image: np.ndarray, pulse_id: int, timestamp, axes) -> None:
        if (image.dtype, image.shape) != self._geometry:
            self._geometry = (image.dtype, image.shape)
            self._retired_changes = self.header_changes
            self.sender.encoder = camera_encoder(image)
        if (image.shape, axes) != self._axes_key:
            self._axes_key = (image.shape, axes)
            self._axes = axis_arrays(image.shape[1], image.shape[0], axes)
        x_axis, y_axis = self._axes
        self.sender.send(
            {
                "width": image.shape[1],
                "height": image.shape[0],
                "timestamp": timestamp[0] + timestamp[1] / 1e9,
                "image": image,
                "x_axis": x_axis,
                "y_axis": y_axis,
            },
            pulse_id,
            timestamp,
        )

    def close(self) -> None:
        self.sender.close()


class Camera:
    """Source -> transforms -> ring (and stream), with statistics and online reports."""

    def __init__(self, spec: dict):
        config = spec["config"]
        self.spec = spec
        self.transform = CameraTransform(config, load_background(config, spec))
        self.source = RetryingSource(source_factory(config, spec))
        self.ring: RingWriter | None = None
        self.errors = 0  # frames the camera could not transform as configured
        self.clients = 0
        self._failed_shape = None
        self._state = None
        self.stats = StatsBlock(spec["stats"], create=True)
        try:
            self.stream = CameraStream(spec["port"])
        except Exception:
            self.stats.close()
            raise

    def step(self) -> None:
        """Take one frame from the source (waiting a little) and publish it."""
        item = self.source.read(timeout=0.2)
        self._report_state()
        if item is None:
            return
        image, pulse_id, timestamp = item
        self.stats.add("frames_in")
        out = self._transform(image)
        axes = self.transform.axes(image.shape[1], image.shape[0], self.source.axes)
        if self.ring is None:
            self.ring = RingWriter(self.spec["ring"], out.dtype, out.shape, self.spec["ring_slots"])
        self.ring.write(out, pulse_id, timestamp, axes=axes)
        self.stats.add("frames_out")
        if self.clients:
            self.stream.send(out, pulse_id, timestamp, axes)

    def _transform(self, image: np.ndarray) -> np.ndarray:
        try:
            return self.transform(image)
        except ValueError as error:  # a background of another shape: the frame goes on as is
            self.errors += 1
            if image.shape != self._failed_shape:
                self._failed_shape = image.shape
                log.error("%s: frames written without background subtraction", error)
            return image

    def _report_state(self) -> None:
        state = (self.source.online, self.source.reason)
        if state != self._state:
            self._state = state
            log.info("source %s: %s", "online" if state[0] else "offline", state[1])
            report(online=state[0], reason=state[1])

    def update_stats(self) -> None:
        self.clients = self.stream.sender.clients
        self.stats.set("clients", self.clients)
        self.stats.set("errors", self.errors + self.source.errors)
        self.stats.set("dropped", self.source.dropped)
        self.stats.set("header_changes", self.stream.header_changes)
        if self.ring is not None:
            self.stats.set("frame_height", self.ring.shape[0])
            self.stats.set("frame_width", self.ring.shape[1])
        self.stats.touch()

    def close(self) -> None:
        self.stream.close()
        if self.ring is not None:
            self.ring.close()
        self.source.close()
        self.stats.close()


def run(spec: dict, control: Control) -> int:
    camera = Camera(spec)
    try:
        report(ready={"stream_port": spec["port"]})
        next_stats = 0.0
        while not control.stop.is_set():
            now = time.monotonic()
            if now >= next_stats:
                camera.update_stats()
                next_stats = now + STATS_PERIOD
            camera.step()
        return 0
    finally:
        camera.close()
