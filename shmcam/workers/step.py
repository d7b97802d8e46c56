"""What a pipeline does to one frame: its function, called the way its type calls it, with
the config's parameters (and the stored background it names), and what a failure does, by
CamServer's keys: `notify_on_error` (default for instances named *_sp) sends a frame whose
background cannot be used as CamServer's processing-error frame; otherwise `abort_on_error`
(default, except for stream pipelines) ends the instance, or the frame is dropped (counted).
A store pipeline (CamServer's DataBuffer feed) runs no function: its frame is the camera's
image as the channel `<camera>:FPICTURE`.

Kept apart from the pipeline's loop (pipeline.py), so that several workers of one pipeline can
each run the same step on their share of the frames.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from shmcam.processing import functions
from shmcam.processing.preprocess import BackgroundError
from shmcam.processing.standard import error_fields
from shmcam.shm import StatsBlock
from shmcam.sources.simulation import beam_frames
from shmcam.sources.transforms import axis_arrays

from . import fan, pipeline_keys
from .pipeline_types import pipeline_type

log = logging.getLogger(__name__)

ENDED = object()  # what a custom pipeline's exhausted generator yields


class ProcessingFailed(RuntimeError):
    """A frame failed with abort_on_error set: the instance ends."""


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


def calling(config: dict, input) -> str:
    """How the function is called: as a processing, stream or custom pipeline calls it. A
    fanout passes camera frames on as images, a stream's messages (and a fanin's) as data."""
    kind = pipeline_type(config)
    if kind == "fanin" or (kind == "fanout" and input.channels_of_frames):
        return "stream"
    return "processing" if kind == "fanout" else kind


class Step:
    def __init__(self, spec: dict, input, stats: StatsBlock):
        self.spec = spec
        self.passes_on = pipeline_type(spec["config"]) in ("fanout", "fanin")
        self.type = calling(spec["config"], input)
        self.scripts = Path(spec["scripts_dir"])
        self.backgrounds = Path(spec["backgrounds_dir"])
        self.input = input
        self.stats = stats
        self.config: dict = {}
        self.ended = False  # a custom pipeline's generator is exhausted
        self._warm_up_frame = None
        self._errors_logged = 0

    def apply(self, config: dict) -> None:
        """Take a new effective config, from the next frame on; one that raises (a function
        that does not load) changes nothing."""
        policy = pipeline_keys.errors(config, self.spec.get("instance_id", ""))
        reload = config.get("reload") or config.get("function") != self.config.get("function")
        function = self.resolve(config.get("function")) if reload or not self.config else None
        parameters_json = json.dumps(config)
        if function is not None:
            self.function = function
        self.parameters, self.setup_error = self.with_background(config)
        self.config, self.parameters_json, self.policy = config, parameters_json, policy
        self.channel = f"{config.get('camera_name')}:FPICTURE"
        self.generator = None  # a custom pipeline's starts afresh with the new parameters
        self.warm_up()

    def resolve(self, name: str | None):
        """The config's function for this pipeline type: stream pipelines pass their data on
        unchanged without one; custom pipelines need one; fanout and fanin pass on; a store
        pipeline runs none."""
        if self.passes_on:
            return fan.channels if self.type == "stream" else fan.camera_channels
        if self.type == "store":
            return None
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
        if self.type == "store":
            return {self.channel: frame.image}
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
        """The result for a frame; a failure as the config's error keys say (None: dropped;
        ProcessingFailed: the instance ends)."""
        t0 = time.perf_counter_ns()
        try:
            if self.setup_error is not None:
                raise BackgroundError(self.setup_error)
            result = self.call(frame)
            if result is not None and not self.passes_on and self.type != "store":
                result.setdefault("processing_parameters", self.parameters_json)
        except Exception as error:
            result = self.failed(frame, error)
        self.stats.record_time(time.perf_counter_ns() - t0)
        return result

    def failed(self, frame, error: Exception) -> dict | None:
        """CamServer's error keys: a frame whose background cannot be used goes out as a
        processing-error frame with notify_on_error; else abort_on_error ends the instance,
        or the frame is dropped. Counted and logged (the first ten) either way; called
        while the error is handled, for its traceback."""
        self.stats.add("errors")
        if self._errors_logged < 10:
            self._errors_logged += 1
            log.exception("processing pulse %d failed", frame.pulse_id)
        if isinstance(error, BackgroundError) and self.policy.notify_on_error:
            axes = self.input.axes(frame) if is_image(frame.image) else (None, None)
            return error_result(frame.image, *axes, self.parameters_json, error)
        if self.policy.abort_on_error:
            raise ProcessingFailed(
                f"processing pulse {frame.pulse_id} failed: {type(error).__name__}: {error} "
                f"(abort_on_error)"
            ) from error
        return None
