"""Pipeline instance: takes frames from its input, runs the function, publishes bsread.

Pipeline types (`pipeline_type`) differ in their input and in how the function is called:
- processing: `process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters[,
  bsdata])` on camera frames (the ring, or an image stream: then `bsdata` has its channels);
- stream: `process(data, pulse_id, timestamp, parameters)` on the channels of a bsread
  stream (default: passed on unchanged), optionally merged with a second stream;
- custom: `generate(parameters)`, a generator whose items go out at `max_frame_rate`;
- store: HDF5 files instead of a stream (workers/store.py);
- external: a program in any language (workers/external.py).
The loop lives here: input (inputs.py) -> flow control (gate.py: pause, max_frame_rate,
downsampling, pid_range, records, enforce_pid) -> the function (step.py: a function that
raises gives an error frame, never ends the pipeline) -> output (output.py: the stream, and
the record ring while a local cascade reads it). A frame the camera overwrote while it was
processed is dropped and counted as torn. The output image is also previewed for viewers on
the node (preview.py).
"""

from __future__ import annotations

import logging
import time

from shmcam.shm import StatsBlock

from .control import Control, report
from .gate import Gate
from .inputs import MergedInput, RecordInput, RingInput, StreamInput, Ticks
from .output import Output, RecordOutput, select
from .pipeline_types import pipeline_type
from .preview import Preview
from .step import Step, is_image

log = logging.getLogger(__name__)

STATS_PERIOD = 0.5
CUSTOM_RATE = 10.0  # frames/s of a custom pipeline without max_frame_rate (shmcam's generators)


def open_input(spec: dict, config: dict):
    """The input a pipeline's config asks for; the supervisor resolved stream addresses."""
    if pipeline_type(config) == "custom":
        return Ticks(config.get("max_frame_rate") or CUSTOM_RATE)
    source = spec.get("input") or {}
    mode = "PULL" if source.get("mode") == "PULL" else "SUB"
    if source.get("records"):
        return RecordInput(source["records"])
    if source.get("stream2"):
        return MergedInput(source["stream"], source["stream2"], mode)
    if source.get("stream"):
        return StreamInput(source["stream"], mode)
    return RingInput(spec["ring"])


class Pipeline:
    """Input -> flow control (Gate) -> Step -> Output (and records), and the preview of the
    output image."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.stats = StatsBlock(spec["stats"], create=True)
        self.input = open_input(spec, spec["config"])
        self.step = Step(spec, self.input, self.stats)
        self.apply(spec["config"])
        self.output = Output(spec, self.config, self.stats)
        self.records = RecordOutput(spec.get("output_ring"), self.stats)
        self.preview = Preview(spec.get("preview"))
        self.sent = 0
        self.geometry = None  # (height, width, bytes per pixel) of the last input image

    @property
    def config(self) -> dict:
        return self.step.config

    def apply(self, config: dict) -> None:
        """Take a new effective config, from the next frame on; one that raises (a function
        that does not load) changes nothing."""
        custom = self.step.type == "custom"
        gate = Gate(config if not custom else {**config, "max_frame_rate": None})
        self.step.apply(config)
        self.gate = gate
        if custom:
            rate = getattr(self.step.function, "default_rate", CUSTOM_RATE)
            self.input.pacer.period = 1.0 / (config.get("max_frame_rate") or rate)

    def run(self, control: Control) -> int:
        self.input.skip_to_newest()  # frames that passed during start-up are not drops
        report(ready={"stream_port": self.spec["port"]})
        next_stats = 0.0
        while not control.stop.is_set():
            control.apply_update(self.apply)
            self.records.follow(control.write_records)
            now = time.monotonic()
            if now >= next_stats:
                self.publish_stats()
                next_stats = now + STATS_PERIOD
            frame = self.input.next(timeout=0.2)
            if frame is None:
                continue
            self.stats.add("frames_in")
            if is_image(frame.image):
                image = frame.image
                self.geometry = (*image.shape, image.dtype.itemsize)
                self.stats.add("bytes_in", image.nbytes)
            passed = self.gate.passed(frame.pulse_id)
            if passed:
                return self.finish(passed)
            if not self.gate.admit(frame.pulse_id):
                continue
            result = self.step.process(frame)
            if self.step.ended:
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
            if result:
                self.records.write(result, frame.pulse_id, frame.timestamp)
            if result and self.output.send(result, frame.pulse_id, frame.timestamp):
                self.sent += 1
                self.stats.add("frames_out")
            done = self.gate.finished(frame.pulse_id, self.sent)
            if done:
                return self.finish(done)
        return 0

    def finish(self, why: str) -> int:
        log.info("pipeline finished: %s", why)
        report(finished=why)
        return 0

    def publish_stats(self) -> None:
        s = self.stats
        s.set("clients", self.output.clients)
        s.set("dropped", self.input.missed + self.output.dropped)
        s.set("torn", self.input.torn)
        s.set("lag", self.input.lag)
        s.set("header_changes", self.output.header_changes)
        if self.geometry is not None:
            for field, value in zip(
                ("frame_height", "frame_width", "frame_itemsize"), self.geometry
            ):
                s.set(field, value)
        s.touch()

    def close(self) -> None:
        self.publish_stats()
        self.output.close()
        self.records.close()
        self.preview.close()
        self.input.close()
        self.stats.close()


def run(spec: dict, control: Control) -> int:
    kind = pipeline_type(spec["config"])
    if kind == "store":
        from . import store  # HDF5 is imported only by the pipelines that write it

        return store.run(spec, control)
    if kind == "external":
        from . import external

        return external.run(spec, control)
    pipeline = Pipeline(spec)
    try:
        return pipeline.run(control)
    finally:
        pipeline.close()
