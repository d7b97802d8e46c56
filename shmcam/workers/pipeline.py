"""Pipeline instance: reads its camera's ring zero-copy, runs the function, publishes bsread.

The pipeline machinery lives here (CamServer's keys): pause, max_frame_rate, downsampling,
pid_range, records, enforce_pid, include/exclude. A function that raises never stops the
pipeline: the frame goes out as a processing-error frame and the error is counted. The stored
background a config names is loaded once per config and handed to the function as
parameters["background_data"]; while it cannot be loaded, every frame is an error frame.
A frame the camera overwrote while it was processed is dropped and counted as torn.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from shmcam.bsread import Encoder, Sender
from shmcam.processing import functions
from shmcam.shm import RingReader, StatsBlock
from shmcam.sources.simulation import beam_frames
from shmcam.sources.transforms import axis_arrays

from .control import Control, report

log = logging.getLogger(__name__)

STATS_PERIOD = 0.5


class Gate:
    """Decides per frame whether it is processed, from the pipeline's flow-control keys."""

    def __init__(self, config: dict):
        self.pause = bool(config.get("pause"))
        rate = config.get("max_frame_rate")
        self.min_interval = 1.0 / rate if rate else 0.0
        self.downsampling = max(1, int(config.get("downsampling") or 1))
        pid_range = config.get("pid_range") or (None, None)
        self.pid_start, self.pid_stop = pid_range
        self.records = config.get("records")
        self.enforce_pid = bool(config.get("enforce_pid"))
        self._count = 0
        self._last_time = -float("inf")
        self._last_pid = None

    def admit(self, pulse_id: int) -> bool:
        self._count += 1
        if self.pause or self._count % self.downsampling:
            return False
        if self.pid_start is not None and pulse_id < self.pid_start:
            return False
        if self.enforce_pid and self._last_pid is not None and pulse_id <= self._last_pid:
            return False
        now = time.monotonic()
        if now - self._last_time < self.min_interval:
            return False
        self._last_time, self._last_pid = now, pulse_id
        return True

    def finished(self, pulse_id: int, sent: int) -> str | None:
        """Why the pipeline is done (pid_range passed, records reached), or None."""
        if self.pid_stop is not None and pulse_id >= self.pid_stop:
            return f"pid_range end {self.pid_stop} reached"
        if self.records is not None and sent >= self.records:
            return f"{self.records} records sent"
        return None


def select(result: dict, config: dict) -> dict:
    include, exclude = config.get("include"), config.get("exclude")
    if include:
        result = {k: v for k, v in result.items() if k in include}
    if exclude:
        result = {k: v for k, v in result.items() if k not in exclude}
    return result


def detach(result: dict, image: np.ndarray) -> dict:
    """Copy the arrays that still point into the ring slot: ZMQ sends them later, by which
    time the camera may have reused the slot."""
    for key, value in result.items():
        if isinstance(value, np.ndarray) and np.may_share_memory(value, image):
            result[key] = value.copy()
    return result


def error_result(image, x_axis, y_axis, parameters_json: str, error: Exception) -> dict:
    """The frame CamServer clients expect when processing failed (spec/processing.md)."""
    parameters = json.loads(parameters_json)
    parameters["processing_error"] = f"{type(error).__name__}: {error}"
    return {"x_axis": x_axis, "y_axis": y_axis, "image": np.zeros_like(image),
            "width": image.shape[1], "height": image.shape[0],
            "processing_parameters": json.dumps(parameters)}


def make_sender(spec: dict, config: dict) -> Sender:
    return Sender(spec["port"], mode=config.get("mode") or "PUB",
                  queue_size=int(config.get("queue_size") or 10),
                  block=bool(config.get("block", False)), send_timeout=1.0,
                  encoder=Encoder(config.get("data_compression"),
                                  config.get("data_header_compression")))


class Pipeline:
    def __init__(self, spec: dict):
        self.spec = spec
        self.scripts = Path(spec["scripts_dir"])
        self.backgrounds = Path(spec["backgrounds_dir"])
        self.stats = StatsBlock(spec["stats"], create=True)
        self.reader = RingReader(spec["ring"], timeout=30)
        self.config: dict = {}
        self._warm_up_frame = None
        self.apply(spec["config"])
        self.sender = make_sender(spec, self.config)
        self.sent = 0
        self._errors_logged = 0
        self._axes_key = None

    def apply(self, config: dict) -> None:
        """Take a new effective config; from the next frame on."""
        reload = config.get("reload") or config.get("function") != self.config.get("function")
        if reload or not hasattr(self, "function"):
            self.function = functions.resolve(config.get("function"), self.scripts)
        self.parameters, self.setup_error = self.with_background(config)
        self.config = config
        self.gate = Gate(config)
        self.parameters_json = json.dumps(config)
        self.warm_up()

    def with_background(self, config: dict) -> tuple[dict, str | None]:
        """The parameters the function gets: the config, plus the stored background it names
        as `background_data` (loaded once per config, not per frame); else why it cannot be
        loaded."""
        background_id = config.get("image_background")
        if not config.get("image_background_enable") or not background_id:
            return config, None
        path = self.backgrounds / f"{background_id}.npy"
        try:
            if path.parent != self.backgrounds:
                raise ValueError("not a background id")
            background = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            return config, f"image_background {background_id!r} cannot be loaded: {error}"
        return {**config, "background_data": background}, None

    def warm_up(self) -> None:
        """Run the function once on a simulated beam of the ring's geometry and dtype, read-only
        like ring views (numba types them apart), so that JIT compilation for this config
        happens now, not on the first real frames. The function gets a copy of the
        parameters: state it keeps per config (averaging) starts afresh with real frames."""
        try:
            shape, dtype, frame = self.reader.shape, self.reader.dtype, self._warm_up_frame
            if frame is None or (frame.shape, frame.dtype) != (shape, dtype):
                frame = self._warm_up_frame = beam_frames(shape[1], shape[0], dtype, count=1)[0]
            self.function(frame, 0, (0, 0), *axis_arrays(shape[1], shape[0], None),
                          dict(self.parameters))
        except Exception as error:
            log.debug("warm-up call failed (%s); the first frame will tell", error)

    def process(self, frame) -> dict | None:
        image = frame.image
        x_axis, y_axis = self.axes(frame)
        t0 = time.perf_counter_ns()
        try:
            if self.setup_error is not None:
                raise RuntimeError(self.setup_error)
            result = self.function(image, frame.pulse_id, frame.timestamp, x_axis, y_axis,
                                   self.parameters)
            if result is not None:
                result.setdefault("processing_parameters", self.parameters_json)
        except Exception as error:  # a user function must never take the pipeline down
            self.stats.add("errors")
            if self._errors_logged < 10:
                self._errors_logged += 1
                log.exception("processing pulse %d failed", frame.pulse_id)
            result = error_result(image, x_axis, y_axis, self.parameters_json, error)
        self.stats.record_time(time.perf_counter_ns() - t0)
        return result

    def axes(self, frame):
        """The frame's axes, built once per geometry and calibration, not per frame."""
        key = (frame.image.shape, frame.axes)
        if key != self._axes_key:
            height, width = frame.image.shape[:2]
            self._axes_key, self._axes = key, axis_arrays(width, height, frame.axes)
        return self._axes

    def run(self, control: Control) -> int:
        self.reader.skip_to_newest()   # frames that passed during start-up are not drops
        report(ready={"stream_port": self.spec["port"]})
        next_stats = 0.0
        while not control.stop.is_set():
            update = control.take_config()
            if update is not None:
                try:
                    self.apply(update)
                except Exception:
                    self.stats.add("errors")
                    log.exception("config update refused; keeping the previous config")
            now = time.monotonic()
            if now >= next_stats:
                self.publish_stats()
                next_stats = now + STATS_PERIOD
            frame = self.reader.wait(timeout=0.2)
            if frame is None:
                continue
            self.stats.add("frames_in")
            if not self.gate.admit(frame.pulse_id):
                continue
            result = self.process(frame)
            if result is not None:
                result = detach(select(result, self.config), frame.image)
            if not self.reader.validate(frame):
                continue     # overwritten while processed: the result may be garbage
            if result and self.sender.send(result, frame.pulse_id, frame.timestamp):
                self.sent += 1
                self.stats.add("frames_out")
            done = self.gate.finished(frame.pulse_id, self.sent)
            if done:
                log.info("pipeline finished: %s", done)
                report(finished=done)
                break
        return 0

    def publish_stats(self) -> None:
        s = self.stats
        s.set("clients", self.sender.clients)
        s.set("dropped", self.reader.missed + self.sender.dropped)
        s.set("torn", self.reader.torn)
        s.set("lag", self.reader.lag)
        s.touch()

    def close(self) -> None:
        self.publish_stats()
        self.sender.close()
        self.reader.close()
        self.stats.close()


def run(spec: dict, control: Control) -> int:
    pipeline = Pipeline(spec)
    try:
        return pipeline.run(control)
    finally:
        pipeline.close()
