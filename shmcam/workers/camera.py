"""Camera instance: the one connection to a camera source; writes every frame once into the ring.

It also publishes the camera's own bsread stream (CamServer's channels and header), but encodes
and sends only while a client is connected: local pipelines read the ring instead.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from shmcam.bsread import Encoder, Sender
from shmcam.bsread.types import bsread_type
from shmcam.shm import RingWriter, StatsBlock
from shmcam.sources.simulation import SimulationSource

from .control import Control, report

log = logging.getLogger(__name__)

SOURCES = {"simulation": SimulationSource}
STATS_PERIOD = 0.5


def make_source(config: dict):
    source_type = config.get("source_type", "simulation")
    try:
        return SOURCES[source_type](config)
    except KeyError:
        raise ValueError(f"unknown source_type {source_type!r}; "
                         f"available here: {', '.join(SOURCES)}") from None


def axes(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Uncalibrated axes: pixel numbers as float32, as CamServer sends them."""
    return np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)


def camera_encoder(image: np.ndarray) -> Encoder:
    """CamServer's camera stream header: its channels, order, types and metadata style."""
    height, width = image.shape[:2]
    return Encoder(channel_meta={
        "width": {"compression": None, "type": "int64"},
        "height": {"compression": None, "type": "int64"},
        "timestamp": {"compression": None, "type": "float64"},
        "image": {"compression": None, "shape": [width, height], "type": bsread_type(image.dtype)},
        "x_axis": {"compression": None, "shape": [width], "type": "float32"},
        "y_axis": {"compression": None, "shape": [height], "type": "float32"},
    })


def run(spec: dict, control: Control) -> int:
    config = spec["config"]
    source = make_source(config)
    stats = StatsBlock(spec["stats"], create=True)
    sender = Sender(spec["port"], mode="PUB", queue_size=100)
    ring = None
    geometry = None
    try:
        report(ready={"stream_port": spec["port"]})
        next_stats = 0.0
        while not control.stop.is_set():
            item = source.read(timeout=0.2)
            now = time.monotonic()
            if now >= next_stats:
                clients = sender.clients
                stats.set("clients", clients)
                stats.touch()
                next_stats = now + STATS_PERIOD
            if item is None:
                continue
            image, pulse_id, timestamp = item
            stats.add("frames_in")
            if ring is None:
                ring = RingWriter(spec["ring"], image.dtype, image.shape, spec["ring_slots"])
            ring.write(image, pulse_id, timestamp)
            stats.add("frames_out")
            if (image.dtype, image.shape) != geometry:
                geometry = (image.dtype, image.shape)
                sender.encoder = camera_encoder(image)
                x_axis, y_axis = axes(image.shape[1], image.shape[0])
            if clients:
                sender.send({"width": image.shape[1], "height": image.shape[0],
                             "timestamp": timestamp[0] + timestamp[1] / 1e9, "image": image,
                             "x_axis": x_axis, "y_axis": y_axis}, pulse_id, timestamp)
        return 0
    finally:
        sender.close()
        if ring is not None:
            ring.close()
        stats.close()
        source.close()
