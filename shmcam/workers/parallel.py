"""A pipeline whose frames are shared out among N workers (`processing_threads` N >= 2; with
`multiprocessing: true` processes, else threads), without pickling anything per frame.

The pipeline's own process runs three parts:
- the dispatcher (a thread): reads the input in order (the camera's ring; a stream, whose
  messages it relays into a record ring of its own), applies the flow-control keys (gate.py)
  and posts the admitted frames as tickets on the work board (shm/board.py);
- the workers (member.py): each claims the newest posted frame, reads it in place, runs the
  pipeline's step and hands the result over; a worker that comes free never starts on a
  stale frame, and skipped frames are counted dropped;
- the collector (collector.py, in the main thread): puts results back in frame order and
  sends them as one bsread stream; with the main loop's other duties: config updates, the
  statistics of the instance and of each worker, and restarting workers that die.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import ExitStack, closing

from shmcam.processing import functions
from shmcam.shm import RecordWriter, StatsBlock, create_record_ring, remove_ring
from shmcam.shm.board import IDLE, Board
from shmcam.shm.slotring import DEFAULT_SLOTS

from . import pipeline_keys, split
from .collector import Collector, RecordInbox, ThreadInbox
from .control import Control, report
from .crew import ProcessCrew, ThreadCrew
from .gate import Gate
from .inputs import Input, RingInput, open_input
from .member import FAILED
from .output import open_output
from .pipeline import finish, publish_counters
from .preview import Preview
from .step import ProcessingFailed, Step, is_image
from .watch import InputWatch

log = logging.getLogger(__name__)

STATS_PERIOD = 0.5
READY_WAIT = 50.0  # seconds the workers get to load the function (the supervisor waits 60)
RESULT_SLOTS = 8  # records of a worker process's result ring
CONFIG_SLOTS = 4


class Tally:
    """Counters of the pipeline's own parts (output errors), summed into its statistics
    with the workers' (which each keep a statistics block of their own)."""

    def __init__(self):
        self.errors = 0

    def add(self, field: str, n: int = 1) -> None:
        if field == "errors":
            self.errors += n

    def record_time(self, ns: int) -> None:
        pass


class ParallelPipeline:
    def __init__(self, spec: dict, plan: split.Split):
        node, instance = spec["node"], spec["instance_id"]
        self.spec, self.plan = spec, plan
        self.tally = Tally()
        self.lost = 0  # frames held by workers that died
        self.passed: str | None = None  # the dispatcher saw the end of pid_range go by
        self.failure: BaseException | None = None  # what ended the dispatcher
        self.sent = 0
        self.geometry = None  # (height, width, bytes per pixel) of the last input image
        self.end_reason = "stopped"
        self.watch = InputWatch()
        self.stopped = threading.Event()
        self.dispatcher = threading.Thread(target=self.dispatch, name="dispatcher", daemon=True)
        # What is made is undone in reverse on close, or at once if a later part fails.
        with ExitStack() as parts:
            self.stats = parts.enter_context(StatsBlock(spec["stats"], create=True))
            self.board = parts.enter_context(
                Board(
                    split.board_name(node, instance), create=True, members=plan.workers,
                    record_slots=RESULT_SLOTS,
                )
            )  # fmt: skip
            self.members = [
                parts.enter_context(
                    StatsBlock(split.member_stats_name(node, instance, k), create=True)
                )
                for k in range(plan.workers)
            ]
            self.configs = parts.enter_context(
                RecordWriter(split.configs_base(node, instance), slots=CONFIG_SLOTS)
            )
            self.source = self._open_input(spec, parts)
            parts.callback(self._stop_dispatcher)  # before its input closes
            self.output = open_output(spec, spec["config"], self.tally, track=plan.processes)
            parts.callback(lambda: self.output.close(self.end_reason))
            self.check = Step(spec, Input(), self.tally)  # loads each config's function
            self.apply(spec["config"])
            self.preview = Preview(spec.get("preview"))
            parts.callback(self.preview.close)
            if plan.processes:
                for k in range(plan.workers):
                    base = split.results_base(node, instance, k)
                    create_record_ring(base, RESULT_SLOTS)
                    parts.callback(remove_ring, base)
                self.crew = ProcessCrew(spec, self.board, plan.workers)
                inboxes = [RecordInbox(spec, self.board, k) for k in range(plan.workers)]
            else:
                self.crew = ThreadCrew(spec, self.board, plan.workers)
                inboxes = [ThreadInbox(outbox) for outbox in self.crew.outboxes]
            self.collector = Collector(
                self.board, inboxes, self.output, plan.send_buffer, zero_copy=plan.processes
            )
            parts.callback(self.collector.close)
            parts.callback(self.crew.stop)
            self._parts = parts.pop_all()

    def _open_input(self, spec: dict, parts: ExitStack):
        """The dispatcher's input; for a stream, the ring its messages are relayed through
        to the workers (`self.relay`)."""
        self.relay = None
        frames = parts.enter_context(closing(open_input(spec, spec["config"], "sequential")))
        if isinstance(frames, RingInput):
            return frames
        base = split.relay_base(spec["node"], spec["instance_id"])
        # a message is posted once the one before it was claimed: at most one waits and one
        # per worker is being processed, so the relay never overwrites one in use
        slots = max(DEFAULT_SLOTS, self.plan.workers + 2)
        self.relay = parts.enter_context(RecordWriter(base, slots=slots))
        return frames

    @property
    def config(self) -> dict:
        return self.check.config

    def apply(self, config: dict) -> None:
        """Take a new config: checked here (its function loads and may be split), then
        published to the workers, which use it from the next frame they claim; one that
        raises changes nothing."""
        plan = split.parse(config)
        self.check.apply(config)
        name = config.get("function")
        if name and name not in functions.BUILTIN and not functions.splittable(self.check.function):
            raise ValueError(
                f"processing_threads {plan.workers}: function {name!r} does not declare that "
                f"it keeps no state from frame to frame; if each frame's result depends on "
                f"that frame alone, set `{functions.SPLITTABLE} = True` in its module"
            )
        gate = Gate(config)
        timeouts = pipeline_keys.errors(config, self.spec["instance_id"])
        self.output.apply(config)
        epoch = self.board.epoch + 1
        self.configs.write(0, (0, 0), {"config": json.dumps(config), "epoch": epoch})
        self.board.bump_epoch()
        self.gate, self.timeouts = gate, timeouts

    # --- the dispatcher ------------------------------------------------------------------------
    def dispatch(self) -> None:
        try:
            self._dispatch()
        except BaseException as error:  # the main loop ends the pipeline with it
            self.failure = error
            raise

    def _dispatch(self) -> None:
        """Read the input in order, gate, post: until stopped or past the end of pid_range."""
        source, relay, board, stats = self.source, self.relay, self.board, self.stats
        while not self.stopped.is_set():
            timeouts = self.timeouts
            frame = source.next(timeout=min(0.2, timeouts.receive_timeout))
            if frame is None:
                self.watch.silence(timeouts, source)
                continue
            self.watch.frame(frame.pulse_id, timeouts)
            stats.add("frames_in")
            if is_image(frame.image):
                image = frame.image
                self.geometry = (*image.shape, image.dtype.itemsize)
                stats.add("bytes_in", image.nbytes)
            gate = self.gate
            passed = gate.passed(frame.pulse_id)
            if passed:
                self.passed = passed
                return
            if not gate.admit(frame.pulse_id, frame.timestamp):
                continue
            if relay is None:
                index = frame.index
            else:  # a stream is not skipped: it waits in ZMQ's queue, as for one process
                while not board.wait_claimed(0.2):
                    if self.stopped.is_set():
                        return
                try:
                    index = relay.write(frame.pulse_id, frame.timestamp, frame.data)
                except (TypeError, ValueError) as error:
                    self.tally.errors += 1
                    log.error("pulse %d not passed to the workers: %s", frame.pulse_id, error)
                    continue
            board.post(index, frame.pulse_id)

    # --- the main loop ---------------------------------------------------------------------
    def run(self, control: Control) -> int:
        self.crew.start_all()
        if not self.wait_ready(control):
            return 1
        self.source.skip_to_newest()
        self.dispatcher.start()
        report(ready={"stream_port": self.spec["port"], **self.output.ready()})
        next_stats = 0.0
        try:
            while not control.stop.is_set():
                if self.failure is not None:
                    raise RuntimeError(f"the dispatcher failed: {self.failure}")
                control.apply_update(self.apply)
                now = time.monotonic()
                if now >= next_stats:
                    self.supervise()
                    self.publish_stats()
                    self.output.periodic()
                    next_stats = now + STATS_PERIOD
                word = self.board.results_word
                done = self.send_ready()
                if done:
                    return self.finish(done)
                if self.passed and self.board.bound() >= self.board.posted:
                    for result in self.collector.reorder.drain():
                        self.send(result)
                    return self.finish(self.passed)
                wait = 0.002 if self.collector.waits_on_zmq() else STATS_PERIOD / 2
                self.board.wait_results(word, min(wait, self.crew.next_restart()))
        finally:
            self.stopped.set()
        return 0

    def finish(self, why: str) -> int:
        self.end_reason = why
        return finish(why)

    def wait_ready(self, control: Control) -> bool:
        """Wait until every worker is set up; False (reported) if one died first."""
        deadline = time.monotonic() + READY_WAIT
        while not all(self.board.ready(k) for k in range(self.plan.workers)):
            dead = [k for k in range(self.plan.workers) if not self.crew.alive(k)]
            if dead or time.monotonic() > deadline or control.stop.is_set():
                why = (
                    f"worker {dead[0]} ended during start-up ({self.crew.epitaph(dead[0])}); "
                    f"see the log"
                    if dead
                    else f"the workers were not ready within {READY_WAIT:g} s"
                )
                if not control.stop.is_set():
                    report(error=why)
                return False
            self.stats.touch()
            self.board.wait_results(self.board.results_word, 0.1)
        return True

    def send_ready(self) -> str | None:
        """Send the results whose turn it is; why the run is over, if it is."""
        for result in self.collector.ready():
            done = self.send(result)
            if done:
                return done
        return None

    def send(self, result) -> str | None:
        if FAILED in result.data:  # a worker's frame failed with abort_on_error
            raise ProcessingFailed(str(result.data[FAILED]))
        preview = self.preview.due(result.data)
        if preview is not None:  # copied while the worker cannot overwrite it
            self.preview.publish(preview, result.pulse_id, result.timestamp)
        if self.collector.send(result):
            self.sent += 1
            self.stats.add("frames_out")
        return self.gate.finished(result.pulse_id, self.sent)

    def supervise(self) -> None:
        """Workers that died: the frame each held is lost, what each published is taken, and
        each is restarted after its delay."""
        for member in self.crew.died():
            if self.board.holding(member) != IDLE:
                self.lost += 1
            self.collector.forget(member)
            self.board.reset_member(member)
        self.crew.restart_due()

    def publish_stats(self) -> None:
        s = self.stats
        counters = [block.snapshot() for block in self.members]
        times = [block.times() for block in self.members]
        s.set("torn", sum(c["torn"] for c in counters))
        s.set("errors", self.tally.errors + sum(c["errors"] for c in counters))
        s.set_times(
            sum(t[0] for t in times),
            max(t[1] for t in times),
            [sum(bucket) for bucket in zip(*(t[2] for t in times))],
        )
        s.set("lag", self.source.lag)
        missed = (
            self.source.missed
            + sum(c["dropped"] for c in counters)
            + self.collector.late
            + self.lost
        )
        publish_counters(s, self.output, missed, self.geometry)

    def _stop_dispatcher(self) -> None:
        self.stopped.set()
        if self.dispatcher.is_alive():
            self.dispatcher.join()  # it looks at `stopped` at least every 0.2 s

    def close(self) -> None:
        self.publish_stats()
        self._parts.close()
