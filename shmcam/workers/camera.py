"""Camera instance: the one connection to a camera source; writes every frame once into the ring.

The config is parsed by sources/config.py (the supervisor validates with the same parser).
Frames are checked where they enter (sources/intake.py), transformed here (binning, mirror,
rotate, roi, background: sources/transforms.py), once for all pipelines, and written with their
pulse id, timestamp and linear axes. A geometry change (camera resized) opens a new ring
generation, which readers follow. The instance reports `{"online": ..., "reason": ...}` on
every change. With `abort_on_error` (CamServer's default) a source that fails ends the
instance; without, the source is created again with backoff and the instance stays up.

It also publishes the camera's own bsread stream (CamServer's channels and header, on tcp and,
with `protocol: ipc`, on an ipc endpoint beside it) and, with `forwarder_port`, CamServer's
DataBuffer feed; each encodes and sends only while a client is connected: local pipelines read
the ring instead.
"""

from __future__ import annotations

import collections
import functools
import logging
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from shmcam.bsread import Encoder, Sender, codec_name
from shmcam.bsread.types import bsread_type
from shmcam.shm import RingWriter, StatsBlock
from shmcam.sources import config as camera_config
from shmcam.sources.base import Context, Throttle
from shmcam.sources.intake import Intake
from shmcam.sources.retry import RetryingSource
from shmcam.sources.transforms import CameraTransform, axis_arrays

from . import backgrounds
from .control import Control, report

log = logging.getLogger(__name__)

STATS_PERIOD = 0.5
SEND_QUEUE = 10  # frames waiting for the send thread of a `threaded` camera (CamServer's)
# Sources paced by their own config (frame_rate is their rate); others are throttled to it.
PACED = ("simulation", "hdf5", "script")


def data_dir(spec: dict, key: str, folder: str) -> Path:
    """A folder of the node's data directory: from the spec, else beside `scripts_dir`."""
    return Path(spec.get(key) or Path(spec["scripts_dir"]).parent / folder)


def source_context(spec: dict) -> Context:
    return Context(
        spec.get("camera") or "camera", data_dir(spec, "camera_scripts_dir", "camera_scripts")
    )


def load_background(config: dict, spec: dict, camera: str) -> np.ndarray | None:
    """The stored background `image_background` names (true: the camera's latest)."""
    background_id = config.get("image_background")
    if not background_id:
        return None
    directory = data_dir(spec, "backgrounds_dir", "backgrounds")
    if background_id is True:
        ids = backgrounds.of_camera((p.stem for p in directory.glob("*.npy")), camera)
        if not ids:
            raise ValueError(f"image_background is true, but no background of camera {camera}")
        background_id = ids[-1]
        log.info("image_background: the latest of camera %s, %s", camera, background_id)
    try:
        return np.load(directory / f"{background_id}.npy", allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"image_background: no stored background {background_id!r}") from None


def ipc_address(spec: dict, camera: str) -> str:
    """The ipc endpoint of `protocol: ipc`, in the node's run directory (TMPDIR under
    systemd: /run/shmcam)."""
    run_dir = spec.get("run_dir") or tempfile.gettempdir()
    return f"ipc://{run_dir}/shmcam.{spec['node']}.{camera}.camera"


class ImageSender:
    """A bsread sender whose data header is declared anew when the image's type or shape
    changes, never per frame."""

    def __init__(self, sender: Sender, declare, header_compression):
        self.sender = sender
        self._declare = declare  # image -> channel_meta
        self._header_compression = header_compression
        self._geometry = None
        self._retired_changes = 0  # header changes of the encoders of earlier geometries

    @property
    def header_changes(self) -> int:
        return self._retired_changes + self.sender.encoder.header_changes

    def send(self, image: np.ndarray, data: dict, pulse_id: int, timestamp) -> None:
        if (image.dtype, image.shape) != self._geometry:
            self._geometry = (image.dtype, image.shape)
            self._retired_changes = self.header_changes
            self.sender.encoder = Encoder(
                header_compression=self._header_compression, channel_meta=self._declare(image)
            )
        self.sender.send(data, pulse_id, timestamp)

    def close(self) -> None:
        self.sender.close()


def compression(setting) -> str | None:
    """A config's compression as a data header names it (true: bitshuffle_lz4; none: null,
    as CamServer's camera writes it)."""
    codec = codec_name(setting)
    return None if codec == "none" else codec


def camera_channels(image: np.ndarray, image_compression=None, scalar_compression=None) -> dict:
    """CamServer's camera stream header: its channels, order, types and metadata style."""
    height, width = image.shape[:2]
    scalar = {"compression": compression(scalar_compression)}
    return {
        "width": {**scalar, "type": "int64"},
        "height": {**scalar, "type": "int64"},
        "timestamp": {**scalar, "type": "float64"},
        "image": {
            "compression": compression(image_compression),
            "shape": [width, height],
            "type": bsread_type(image.dtype),
        },
        "x_axis": {**scalar, "shape": [width], "type": "float32"},
        "y_axis": {**scalar, "shape": [height], "type": "float32"},
    }


def stream_channels(image: np.ndarray, timestamp, x_axis, y_axis) -> dict:
    """A frame as the camera's stream carries it (CamServer's channels)."""
    return {
        "width": image.shape[1],
        "height": image.shape[0],
        "timestamp": timestamp[0] + timestamp[1] / 1e9,
        "image": image,
        "x_axis": x_axis,
        "y_axis": y_axis,
    }


class CameraStream(ImageSender):
    """The camera's bsread stream: PUB with `queue_size`, compressed as configured; the axis
    arrays are rebuilt only when the geometry or the axes change."""

    def __init__(self, port: int, config: dict, ipc: str | None = None):
        sender = Sender(port, mode="PUB", queue_size=config["queue_size"])
        try:
            self.ipc = ipc and sender.bind(ipc)
        except Exception:
            sender.close()
            raise
        super().__init__(
            sender,
            functools.partial(
                camera_channels,
                image_compression=config["image_compression"],
                scalar_compression=config["scalar_compression"],
            ),
            config["data_header_compression"],
        )
        self._axes_key = self._axes = None

    def publish(self, image: np.ndarray, pulse_id: int, timestamp, axes, extend) -> None:
        if (image.shape, axes) != self._axes_key:
            self._axes_key = (image.shape, axes)
            self._axes = axis_arrays(image.shape[1], image.shape[0], axes)
        channels = stream_channels(image, timestamp, *self._axes)
        self.send(image, extend(channels), pulse_id, timestamp)

    def close(self) -> None:
        super().close()
        if self.ipc:  # libzmq may leave the socket file behind when the process ends
            Path(self.ipc.removeprefix("ipc://")).unlink(missing_ok=True)


class Forwarder(ImageSender):
    """CamServer's DataBuffer/ImageBuffer feed: a non-blocking PUSH of the single channel
    `<camera>:FPICTURE` on `forwarder_port`."""

    def __init__(self, config: dict, camera: str):
        self.channel = f"{camera}:FPICTURE"
        codec = compression(config["forwarder_compression"])
        super().__init__(
            Sender(config["forwarder_port"], mode="PUSH", queue_size=config["queue_size"]),
            lambda image: {
                self.channel: {
                    "compression": codec,
                    "shape": [image.shape[1], image.shape[0]],
                    "type": bsread_type(image.dtype),
                }
            },
            config["forwarder_data_header_compression"],
        )

    def publish(self, image: np.ndarray, pulse_id: int, timestamp) -> None:
        self.send(image, {self.channel: image}, pulse_id, timestamp)


class SendThread:
    """CamServer's `threaded` camera: frames go out from a thread of their own through a
    short queue (the oldest dropped when it is full), so sending never delays the ring."""

    def __init__(self, send):
        self._send = send
        self._queue: collections.deque = collections.deque(maxlen=SEND_QUEUE)
        self._wakeup = threading.Condition()
        self._stopping = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="camera send", daemon=True)
        self._thread.start()

    def put(self, *frame) -> None:
        with self._wakeup:
            self.dropped += len(self._queue) == SEND_QUEUE
            self._queue.append(frame)
            self._wakeup.notify()

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._queue and not self._stopping:
                    self._wakeup.wait()
                if self._stopping:
                    return
                frame = self._queue.popleft()
            try:
                self._send(*frame)
            except Exception:
                log.exception("sending a frame failed")

    def close(self) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        self._thread.join()


class Outputs:
    """The camera's streams, sent to only while they have clients."""

    def __init__(self, spec: dict, config: dict, camera: str):
        ipc = ipc_address(spec, camera) if config["protocol"] == "ipc" else None
        self.stream = CameraStream(spec["port"], config, ipc)
        self.forwarder = None
        self.thread = None
        try:
            if config["forwarder_port"]:
                self.forwarder = Forwarder(config, camera)
            if config["threaded"]:
                self.thread = SendThread(self._send)
        except Exception:
            self.close()
            raise
        self.clients = self.forwarder_clients = 0
        self.errors = 0  # frames the stream could not send
        self._why = None

    def addresses(self, spec: dict, config: dict) -> dict:
        """What the ready report tells the supervisor."""
        return {
            "stream_port": spec["port"],
            "stream_ipc": self.stream.ipc,
            "forwarder_port": config["forwarder_port"],
        }

    @property
    def header_changes(self) -> int:
        return self.stream.header_changes

    @property
    def dropped(self) -> int:
        return self.thread.dropped if self.thread else 0

    def update_clients(self) -> None:
        self.clients = self.stream.sender.clients
        self.forwarder_clients = self.forwarder.sender.clients if self.forwarder else 0

    def publish(self, image: np.ndarray, pulse_id: int, timestamp, axes, extend) -> None:
        if self.clients or self.forwarder_clients:
            (self.thread.put if self.thread else self._send)(
                image, pulse_id, timestamp, axes, extend
            )

    def _send(self, image, pulse_id, timestamp, axes, extend) -> None:
        if self.clients:
            try:
                self.stream.publish(image, pulse_id, timestamp, axes, extend)
            except (TypeError, ValueError) as error:  # a script's channels bsread cannot carry
                self.errors += 1
                if str(error) != self._why:
                    self._why = str(error)
                    log.warning("frame not sent on the camera stream (counted): %s", error)
        if self.forwarder_clients:
            self.forwarder.publish(image, pulse_id, timestamp)

    def close(self) -> None:
        if self.thread is not None:
            self.thread.close()
        for output in (self.stream, self.forwarder):
            if output is not None:
                output.close()


class Camera:
    """Source -> intake -> transforms -> ring (and streams), with statistics and online
    reports."""

    def __init__(self, spec: dict):
        self.config = config = camera_config.parse(spec["config"])
        self.spec = spec
        self.name = spec.get("camera") or "camera"
        self.transform = CameraTransform(config, load_background(config, spec, self.name))
        self.intake = Intake(config, self.name, spec.get("max_frame_bytes"))
        paced = config["source_type"] in PACED or not config["frame_rate"]
        self.throttle = None if paced else Throttle(config["frame_rate"])
        self.ring: RingWriter | None = None
        self.errors = 0  # frames the camera could not transform as configured
        self._failed_shape = None
        self._state = None
        self.outputs = self.source = None
        self.stats = StatsBlock(spec["stats"], create=True)
        try:
            self.outputs = Outputs(spec, config, self.name)
            factory = functools.partial(
                camera_config.source_class(config), config, source_context(spec)
            )
            self.source = factory() if config["abort_on_error"] else RetryingSource(factory)
        except BaseException:
            self.close()
            raise

    def step(self) -> None:
        """Take one frame from the source (waiting a little) and publish it."""
        item = self.source.read(timeout=0.2)
        self._report_state()
        if item is None:
            return
        self.stats.add("frames_in")
        frame = self.intake.accept(item)
        if frame is None or (self.throttle is not None and not self.throttle.due()):
            return
        image, pulse_id, timestamp = frame
        out = self._transform(image)
        axes = self.transform.axes(image.shape[1], image.shape[0], self.source.axes)
        if self.ring is None:
            self.ring = RingWriter(self.spec["ring"], out.dtype, out.shape, self.spec["ring_slots"])
        self.ring.write(out, pulse_id, timestamp, axes=axes)
        self.stats.add("frames_out")
        self.stats.add("bytes_in", image.nbytes)
        self.outputs.publish(out, pulse_id, timestamp, axes, self.source.send_channels)

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
        outputs = self.outputs
        outputs.update_clients()
        self.stats.set("clients", outputs.clients)
        self.stats.set("forwarder_clients", outputs.forwarder_clients)
        self.stats.set(
            "errors", self.errors + self.intake.rejected + self.source.errors + outputs.errors
        )
        self.stats.set("dropped", self.source.dropped + outputs.dropped)
        self.stats.set("header_changes", outputs.header_changes)
        if self.ring is not None:
            self.stats.set("frame_height", self.ring.shape[0])
            self.stats.set("frame_width", self.ring.shape[1])
            self.stats.set("frame_itemsize", self.ring.dtype.itemsize)
        self.stats.touch()

    def close(self) -> None:
        for part in (self.outputs, self.ring, self.source, self.stats):
            if part is not None:
                part.close()


def run(spec: dict, control: Control) -> int:
    camera = Camera(spec)
    try:
        report(ready=camera.outputs.addresses(spec, camera.config))
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
