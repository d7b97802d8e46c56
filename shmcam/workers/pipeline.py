"""Pipeline instance: takes frames from its input, runs the function, publishes bsread.

Pipeline types (`pipeline_type`) differ in their input and in how the function is called:
- processing: `process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters[,
  bsdata])` on camera frames (the ring, or an image stream: then `bsdata` has its channels);
- stream: `process(data, pulse_id, timestamp, parameters)` on the channels of a bsread
  stream (default: passed on unchanged), optionally merged with a second stream;
- custom: `generate(parameters)`, a generator whose items go out at `max_frame_rate`;
- store: HDF5 files instead of a stream (workers/store.py).
The pipeline machinery lives here (CamServer's keys): pause, max_frame_rate, downsampling,
pid_range, records, enforce_pid, include/exclude. A function that raises never stops the
pipeline: the frame goes out as a processing-error frame and the error is counted. The stored
background a config names is loaded once per config and handed to the function as
parameters["background_data"]; while it cannot be loaded, every frame is an error frame.
A frame the camera overwrote while it was processed is dropped and counted as torn. The
output image is also previewed for viewers on the node (preview.py).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from shmcam.bsread import Encoder, Sender
from shmcam.processing import functions
from shmcam.processing.standard import error_fields
from shmcam.shm import StatsBlock
from shmcam.sources.simulation import beam_frames
from shmcam.sources.transforms import axis_arrays

from .control import Control, report
from .gate import Gate
from .inputs import MergedInput, RingInput, StreamInput, Ticks
from .pipeline_types import pipeline_type
from .preview import Preview

log = logging.getLogger(__name__)

STATS_PERIOD = 0.5
CUSTOM_RATE = 10.0  # frames/s of a custom pipeline without max_frame_rate (shmcam's generators)
ENDED = object()  # what a custom pipeline's exhausted generator yields


def select(result: dict, config: dict) -> dict:
    include, exclude = config.get("include"), config.get("exclude")
    if include:
        result = {k: v for k, v in result.items() if k in include}
    if exclude:
        result = {k: v for k, v in result.items() if k not in exclude}
    return result


def is_image(value) -> bool:
    """A frame image a processing function can take: a non-empty 2-D numeric array."""
    return (
        isinstance(value, np.ndarray)
        and value.ndim == 2
        and value.size > 0
        and value.dtype.kind in "biuf"
    )


def error_result(image, x_axis, y_axis, parameters_json: str, error: Exception) -> dict:
    """The frame CamServer clients expect when processing failed (docs/spec/processing.md);
    without an image (stream and custom pipelines, or an input whose image is not one), just
    the parameters with the error."""
    parameters = json.loads(parameters_json)
    parameters["processing_error"] = f"{type(error).__name__}: {error}"
    if not is_image(image):
        return {"processing_parameters": json.dumps(parameters)}
    return error_fields(image, x_axis, y_axis, json.dumps(parameters))


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} of shape {list(value.shape)}"
    return "none" if value is None else type(value).__name__


def open_input(spec: dict, config: dict):
    """The input a pipeline's config asks for; the supervisor resolved stream addresses."""
    if pipeline_type(config) == "custom":
        return Ticks(config.get("max_frame_rate") or CUSTOM_RATE)
    source = spec.get("input") or {}
    mode = "PULL" if source.get("mode") == "PULL" else "SUB"
    if source.get("stream2"):
        return MergedInput(source["stream"], source["stream2"], mode)
    if source.get("stream"):
        return StreamInput(source["stream"], mode)
    return RingInput(spec["ring"])


def make_sender(spec: dict, config: dict) -> Sender:
    return Sender(
        spec["port"],
        mode=config.get("mode") or "PUB",
        queue_size=int(config.get("queue_size") or 10),
        block=bool(config.get("block", False)),
        send_timeout=1.0,
        encoder=Encoder(
            config.get("data_compression"),
            config.get("data_header_compression"),
            create_header=config.get("create_header") or "on_change",
        ),
    )


class Pipeline:
    def __init__(self, spec: dict):
        self.spec = spec
        self.type = pipeline_type(spec["config"])
        self.scripts = Path(spec["scripts_dir"])
        self.backgrounds = Path(spec["backgrounds_dir"])
        self.stats = StatsBlock(spec["stats"], create=True)
        self.input = open_input(spec, spec["config"])
        self.config: dict = {}
        self._warm_up_frame = None
        self.apply(spec["config"])
        self.sender = make_sender(spec, self.config)
        self.push = (self.config.get("mode") or "PUB") == "PUSH"
        self.preview = Preview(spec.get("preview"))
        self.sent = 0
        self.ended = False  # a custom pipeline's generator is exhausted
        self.frame_shape = None
        self._errors_logged = 0

    def apply(self, config: dict) -> None:
        """Take a new effective config, from the next frame on; one that raises (a function
        that does not load) changes nothing."""
        reload = config.get("reload") or config.get("function") != self.config.get("function")
        function = self.resolve(config.get("function")) if reload or not self.config else None
        gate = Gate(config if self.type != "custom" else {**config, "max_frame_rate": None})
        parameters_json = json.dumps(config)
        if function is not None:
            self.function = function
        self.parameters, self.setup_error = self.with_background(config)
        self.config, self.gate, self.parameters_json = config, gate, parameters_json
        if self.type == "custom":
            rate = getattr(self.function, "default_rate", CUSTOM_RATE)
            self.input.pacer.period = 1.0 / (config.get("max_frame_rate") or rate)
            self.generator = None  # started afresh with the new parameters
        self.warm_up()

    def resolve(self, name: str | None):
        """The config's function for this pipeline type: stream pipelines pass their data on
        unchanged without one; custom pipelines need one."""
        if self.type == "stream" and not name:
            return lambda data, pulse_id, timestamp, parameters: dict(data)
        if self.type == "custom" and not name:
            raise ValueError(
                "a custom pipeline needs a function (an uploaded script "
                "defining generate(parameters))"
            )
        return functions.resolve(
            name, self.scripts, self.type, self.spec.get("function_dirs") or ()
        )

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
        if self.type != "processing" or self.input.geometry is None:
            return
        try:
            shape, dtype = self.input.geometry
            frame = self._warm_up_frame
            if frame is None or (frame.shape, frame.dtype) != (shape, dtype):
                frame = self._warm_up_frame = beam_frames(shape[1], shape[0], dtype, count=1)[0]
            self.function(
                frame, 0, (0, 0), *axis_arrays(shape[1], shape[0], None), dict(self.parameters)
            )
        except Exception as error:
            log.debug("warm-up call failed (%s); the first frame will tell", error)

    def call(self, frame) -> dict | None:
        """The function's result for a frame, called the way the pipeline type calls it."""
        if self.type == "processing":
            if not is_image(frame.image):  # a foreign stream's: checked where it enters
                raise ValueError(
                    f"the input's image is not a non-empty 2-D numeric array "
                    f"({_describe(frame.image)})"
                )
            channels = self.input.channels(frame)
            extra = {} if channels is None else {"bsdata": channels}
            return self.function(
                frame.image,
                frame.pulse_id,
                frame.timestamp,
                *self.input.axes(frame),
                self.parameters,
                **extra,
            )
        if self.type == "stream":
            return self.function(
                self.input.channels(frame), frame.pulse_id, frame.timestamp, self.parameters
            )
        if self.generator is None:
            self.generator = iter(self.function(self.parameters))
        item = next(self.generator, ENDED)
        if item is ENDED:
            self.ended = True
            return None
        if isinstance(item, functions.Stamped):  # CamServer's custom functions stamp their data
            frame.pulse_id = frame.pulse_id if item.pulse_id is None else item.pulse_id
            frame.timestamp = item.timestamp or frame.timestamp
            return item.data
        return item

    def process(self, frame) -> dict | None:
        t0 = time.perf_counter_ns()
        try:
            if self.setup_error is not None:
                raise RuntimeError(self.setup_error)
            result = self.call(frame)
            if result is not None:
                result.setdefault("processing_parameters", self.parameters_json)
        except Exception as error:  # a user function must never take the pipeline down
            self.stats.add("errors")
            if self._errors_logged < 10:
                self._errors_logged += 1
                log.exception("processing pulse %d failed", frame.pulse_id)
            axes = self.input.axes(frame) if is_image(frame.image) else (None, None)
            result = error_result(frame.image, *axes, self.parameters_json, error)
        self.stats.record_time(time.perf_counter_ns() - t0)
        return result

    def run(self, control: Control) -> int:
        self.input.skip_to_newest()  # frames that passed during start-up are not drops
        report(ready={"stream_port": self.spec["port"]})
        next_stats = 0.0
        while not control.stop.is_set():
            control.apply_update(self.apply)
            now = time.monotonic()
            if now >= next_stats:
                self.publish_stats()
                next_stats = now + STATS_PERIOD
            frame = self.input.next(timeout=0.2)
            if frame is None:
                continue
            self.stats.add("frames_in")
            self.frame_shape = frame.image.shape if is_image(frame.image) else None
            passed = self.gate.passed(frame.pulse_id)
            if passed:
                return self.finish(passed)
            if not self.gate.admit(frame.pulse_id):
                continue
            result = self.process(frame)
            if self.ended:
                return self.finish("the generator ended")
            preview = self.preview.due(result)
            if preview is not None:
                preview = self.input.own(preview, frame)
            if result is not None:
                result = self.input.detach(select(result, self.config), frame)
            if not self.input.valid(frame):
                continue  # overwritten while processed: the result may be garbage
            if preview is not None:
                self.preview.publish(preview, frame.pulse_id, frame.timestamp)
            if result and self.send(result, frame):
                self.sent += 1
                self.stats.add("frames_out")
            done = self.gate.finished(frame.pulse_id, self.sent)
            if done:
                return self.finish(done)
        return 0

    def send(self, result: dict, frame) -> bool:
        """Send a result; False if it was not sent. A PUSH stream without a client sends
        nothing and drops nothing: no client asked for the frame (a PUB stream has ZMQ
        discard it the same way)."""
        if self.push and not self.sender.clients:
            return False
        try:
            return self.sender.send(result, frame.pulse_id, frame.timestamp)
        except (TypeError, ValueError) as error:  # a result bsread cannot carry, or
            self.stats.add("errors")  # a format change under create_header once
            if self._errors_logged < 10:
                self._errors_logged += 1
                log.error("pulse %d not sent: %s", frame.pulse_id, error)
            return False

    def finish(self, why: str) -> int:
        log.info("pipeline finished: %s", why)
        report(finished=why)
        return 0

    def publish_stats(self) -> None:
        s = self.stats
        s.set("clients", self.sender.clients)
        s.set("dropped", self.input.missed + self.sender.dropped)
        s.set("torn", self.input.torn)
        s.set("lag", self.input.lag)
        s.set("header_changes", self.sender.encoder.header_changes)
        if self.frame_shape is not None and len(self.frame_shape) == 2:
            s.set("frame_height", self.frame_shape[0])
            s.set("frame_width", self.frame_shape[1])
        s.touch()

    def close(self) -> None:
        self.publish_stats()
        self.sender.close()
        self.preview.close()
        self.input.close()
        self.stats.close()


def run(spec: dict, control: Control) -> int:
    if pipeline_type(spec["config"]) == "store":
        from . import store  # HDF5 is imported only by the pipelines that write it

        return store.run(spec, control)
    pipeline = Pipeline(spec)
    try:
        return pipeline.run(control)
    finally:
        pipeline.close()
