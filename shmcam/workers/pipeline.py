"""Pipeline instance: takes frames from its input, runs the function, publishes bsread.

Pipeline types (`pipeline_type`) differ in their input and in how the function is called:
- processing: `process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters[,
  bsdata])` on camera frames (the ring, or an image stream: then `bsdata` has its channels);
- stream: `process(data, pulse_id, timestamp, parameters)` on the channels of a bsread
  stream (default: passed on unchanged), optionally merged with a second stream;
- custom: `generate(parameters)`, a generator whose items go out at `max_frame_rate`;
- store: CamServer's DataBuffer feed, the camera's image as `<camera>:FPICTURE` (PUSH);
- fanout, fanin: frames passed on to worker pipelines, their results gathered (fan.py);
- external: a program in any language (workers/external.py).
A pipeline with `processing_threads` N >= 2 shares its frames out among N workers
(parallel.py). Otherwise the loop lives here: input (inputs.py; a camera's ring is read in
order while the pipeline is at most one frame behind, else from the newest frame on, the
skipped ones counted dropped) -> flow control (gate.py: pause, max_frame_rate,
downsampling, pid_range, records, enforce_pid, ...) -> the function (step.py, with
CamServer's error keys) -> output (output.py: a bsread stream, or file_output.py: HDF5; and
the record ring while a local cascade reads it). A frame the camera overwrote while it was
processed is dropped and counted as torn. The output image is also previewed for viewers on
the node (preview.py). A silent input is reconnected after `camera_timeout`, and ends the
instance after `stream_timeout` with `abort_on_timeout`.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack

from shmcam.shm import StatsBlock

from . import fan, pipeline_keys, split
from .control import Control, report
from .gate import Gate
from .inputs import CUSTOM_RATE, open_input
from .output import RecordOutput, select
from .pipeline_types import pipeline_type
from .preview import Preview
from .step import Step, is_image
from .watch import InputWatch

log = logging.getLogger(__name__)

STATS_PERIOD = 0.5


class Pipeline:
    """Input -> flow control (Gate) -> Step -> Output (and records), and the preview of the
    output image."""

    def __init__(self, spec: dict):
        self.spec = spec
        with ExitStack() as undo:  # what is open when a later step fails is closed
            self.stats = StatsBlock(spec["stats"], create=True)
            undo.callback(self.stats.close)
            self.input = open_input(spec, spec["config"])
            undo.callback(self.input.close)  # a stream the dispatcher opened is released
            self.output = fan.output(spec, spec["config"], self.stats)
            undo.callback(self.output.close)
            self.step = Step(spec, self.input, self.stats)
            self.apply(spec["config"])
            undo.pop_all()
        self.records = RecordOutput(spec.get("output_ring"), self.stats)
        self.preview = Preview(spec.get("preview"))
        self.sent = 0
        self.geometry = None  # (height, width, bytes per pixel) of the last input image
        self.end_reason = "stopped"
        self.watch = InputWatch()

    @property
    def config(self) -> dict:
        return self.step.config

    def apply(self, config: dict) -> None:
        """Take a new effective config, from the next frame on; one that raises (a function
        that does not load) changes nothing."""
        custom = self.step.type == "custom"
        gate = Gate(config if not custom else {**config, "max_frame_rate": None})
        pipeline_keys.output(config), pipeline_keys.file(config)  # they raise, or apply() won't
        timeouts = pipeline_keys.errors(config, self.spec["instance_id"])
        self.step.apply(config)
        self.gate, self.timeouts = gate, timeouts
        self.output.apply(config)
        if custom:
            rate = getattr(self.step.function, "default_rate", CUSTOM_RATE)
            self.input.pacer.period = 1.0 / (config.get("max_frame_rate") or rate)

    def run(self, control: Control) -> int:
        self.input.skip_to_newest()  # frames that passed during start-up are not drops
        report(ready={"stream_port": self.spec["port"], **self.output.ready()})
        next_stats = 0.0
        while not control.stop.is_set():
            control.apply_update(self.apply)
            self.records.follow(control.write_records)
            now = time.monotonic()
            if now >= next_stats:
                self.publish_stats()
                self.output.periodic()
                next_stats = now + STATS_PERIOD
            frame = self.input.next(timeout=self.timeouts.receive_timeout)
            if frame is None:
                self.watch.silence(self.timeouts, self.input)
                continue
            self.watch.frame(frame.pulse_id, self.timeouts)
            self.stats.add("frames_in")
            if is_image(frame.image):
                image = frame.image
                self.geometry = (*image.shape, image.dtype.itemsize)
                self.stats.add("bytes_in", image.nbytes)
            passed = self.gate.passed(frame.pulse_id)
            if passed:
                return self.finish(passed)
            if not self.gate.admit(frame.pulse_id, frame.timestamp):
                continue
            result = self.step.process(frame)
            if self.step.ended:
                return self.finish("the generator ended")
            preview = self.preview.due(result)
            if preview is not None:
                preview = self.input.own(preview, frame)
            if result is not None:
                result = self.input.detach(select(result, self.output.keys), frame)
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
        self.end_reason = why
        return finish(why)

    def publish_stats(self) -> None:
        s = self.stats
        s.set("torn", self.input.torn)
        s.set("lag", self.input.lag)
        publish_counters(s, self.output, self.input.missed, self.geometry)

    def close(self) -> None:
        self.publish_stats()
        self.output.close(self.end_reason)
        self.records.close()
        self.preview.close()
        self.input.close()
        self.stats.close()


def finish(why: str) -> int:
    """A run that ends by the config (pid_range, records, a generator): exit code 0."""
    log.info("pipeline finished: %s", why)
    report(finished=why)
    return 0


def publish_counters(stats: StatsBlock, output, missed: int, geometry) -> None:
    """What every pipeline shows of its output, its drops (`missed`: those before the
    output) and its input images (`geometry`: height, width, bytes per pixel), and that it
    is alive."""
    counters = output.counters()
    counters["dropped"] += missed
    for field, value in counters.items():
        stats.set(field, value)
    if geometry is not None:
        for field, value in zip(("frame_height", "frame_width", "frame_itemsize"), geometry):
            stats.set(field, value)
    stats.touch()


def run(spec: dict, control: Control) -> int:
    if pipeline_type(spec["config"]) == "external":
        from . import external  # the program's host, not this loop

        return external.run(spec, control)
    plan = split.parse(spec["config"])
    if plan.workers > 1:
        from .parallel import ParallelPipeline  # its workers' machinery only where used

        pipeline = ParallelPipeline(spec, plan)
    else:
        pipeline = Pipeline(spec)
    try:
        return pipeline.run(control)
    except Exception as error:
        pipeline.end_reason = f"failed: {error}"
        raise
    finally:
        pipeline.close()
