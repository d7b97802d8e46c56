"""One worker of a parallel pipeline (`processing_threads`): claims frames on the work board,
reads each in place from the camera's ring (or the ring a stream input is relayed through),
runs the pipeline's step on it and hands the result to the collector.

The same loop runs in a thread (`multiprocessing` false) or in a process of its own
(`python -m shmcam.workers.member`, started by parallel.py with its orders on stdin). A
process hands its results over through a record ring of its own, which the collector reads
in place: nothing is pickled, and the result's arrays are copied once, into the ring. A thread
hands its result dicts over directly.

Config updates: the pipeline publishes each config it takes as a record of the config ring
and bumps the board's epoch; a worker looks at the epoch right after each claim and takes
the newest config before it touches the frame. Frames are claimed in order, so every worker
uses the new config from the same frame on: the first one claimed after the update.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import signal
import sys
import threading
from collections import deque

from shmcam.shm import RecordReader, RecordWriter, StatsBlock
from shmcam.shm.board import Board, Claim

from . import pipeline_keys, split
from .inputs import RecordInput, RingInput
from .output import select
from .step import ProcessingFailed, Step

log = logging.getLogger(__name__)

CLAIM_WAIT = 0.2  # seconds a worker waits for work before looking at its stop flag
# The channel of a result that says its frame failed with abort_on_error: the pipeline ends
# when that frame's turn comes (parallel.py).
FAILED = "shmcam:processing_failed"


class RingShare(RingInput):
    """The camera's ring, read at the frames the dispatcher posted."""

    def take(self, index: int, pulse_id: int):
        frame = self.reader.item(index)
        if frame is not None and frame.pulse_id != pulse_id:  # a restarted camera's
            return None
        return self.prepared(frame)


class RelayShare(RecordInput):
    """The records a stream input's messages were relayed into, read in place."""

    def take(self, index: int, pulse_id: int):
        record = self.reader.item(index)
        if record is not None and record.pulse_id != pulse_id:
            return None
        return record


def share(spec: dict):
    """What a worker reads its frames from: the camera's ring, or the relay ring."""
    if spec.get("input"):
        return RelayShare(split.relay_base(spec["node"], spec["instance_id"]))
    return RingShare(spec["ring"])


class Result:
    """A result on its way to the collector: its ticket, stamps, channels, and how its
    holder lets go of it."""

    __slots__ = ("ticket", "pulse_id", "timestamp", "data", "inbox", "entry")

    def __init__(self, ticket, pulse_id, timestamp, data, inbox=None, entry=None):
        self.ticket, self.pulse_id, self.timestamp, self.data = ticket, pulse_id, timestamp, data
        self.inbox, self.entry = inbox, entry

    def release(self) -> None:
        if self.inbox is not None:
            self.inbox.release(self.entry)


class ThreadOutbox:
    """A worker thread's results, handed over as they are (arrays detached from the input)."""

    def __init__(self):
        self.results: deque[Result] = deque()

    def deliver(self, member: Member, ticket: int, frame, result: dict) -> bool:
        result = member.input.detach(result, frame)
        if not member.input.valid(frame):
            member.stats.add("torn")
            return False
        self.results.append(Result(ticket, frame.pulse_id, frame.timestamp, result))
        return True


class RecordOutbox:
    """A worker process's results, copied into its record ring; a record is written only
    once the collector released the one its slot holds, and published only if the frame it
    was computed from stayed intact throughout."""

    def __init__(self, spec: dict, index: int):
        self.writer = RecordWriter(split.results_base(spec["node"], spec["instance_id"], index))

    def deliver(self, member: Member, ticket: int, frame, result: dict) -> bool:
        record = self.writer.records_written
        while not member.board.wait_released(member.index, record, CLAIM_WAIT):
            if member.board.stopping:
                return False
        member.board.note_record(member.index, record, ticket)
        try:
            written = self.writer.write(
                frame.pulse_id, frame.timestamp, result, intact=lambda: member.input.valid(frame)
            )
        except (TypeError, ValueError) as error:  # what bsread could not send either
            member.stats.add("errors")
            log.error("pulse %d: result not passed on: %s", frame.pulse_id, error)
            return False
        if written is None:
            member.stats.add("torn")
            return False
        return True

    def close(self) -> None:
        self.writer.close(unlink=False)  # the pipeline removes it (a successor takes over)


class Member:
    """One worker: claim, take the frame, process, deliver; until the board stops."""

    def __init__(self, spec: dict, index: int, outbox):
        node, instance = spec["node"], spec["instance_id"]
        self.index = index
        self.board = Board(split.board_name(node, instance))
        self.stats = StatsBlock(split.member_stats_name(node, instance, index), writable=True)
        self.configs = RecordReader(split.configs_base(node, instance), timeout=30)
        self.input = share(spec)
        self.step = Step(spec, self.input, self.stats)
        self.outbox = outbox
        self.queue = split.parse(spec["config"]).queue
        self.epoch = -1
        self.follow_config()

    def follow_config(self) -> None:
        """Take the newest config if the pipeline published one since the last look."""
        if self.board.epoch == self.epoch:
            return
        record = self.configs.latest()
        config = json.loads(record.data["config"])
        self.step.apply(config)  # the pipeline checked it: a failure here ends the worker
        self.keys = pipeline_keys.output(config)
        self.epoch = int(record.data["epoch"])

    def run(self, stop: threading.Event) -> None:
        self.board.set_ready(self.index)
        while not stop.is_set() and not self.board.stopping:
            claim = self.board.claim(self.index, CLAIM_WAIT, self.queue)
            if claim is None:
                continue
            try:
                self.work(claim)
            except BaseException:
                self.stats.add("dropped")  # the frame it held is lost with it
                raise
            finally:
                self.board.done(self.index)

    def work(self, claim: Claim) -> None:
        stats = self.stats
        if claim.skipped:
            stats.add("dropped", claim.skipped)
        self.follow_config()
        frame = self.input.take(claim.index, claim.pulse_id)
        if frame is None:  # overwritten before anyone took it
            stats.add("dropped")
            return
        stats.add("frames_in")
        try:
            result = self.step.process(frame)
        except ProcessingFailed as error:  # the pipeline ends at this frame's turn
            self.outbox.deliver(self, claim.ticket, frame, {FAILED: str(error)})
            return
        if result:
            result = select(result, self.keys)
        if result and self.outbox.deliver(self, claim.ticket, frame, result):
            stats.add("frames_out")
        stats.touch()

    def close(self) -> None:
        for part in (self.input, self.configs, self.stats, self.board):
            part.close()
        if isinstance(self.outbox, RecordOutbox):
            self.outbox.close()


def main() -> int:
    """A worker process: its orders ({"spec": ..., "member": k}) come as one line on stdin;
    its log records go to stdout as report lines, which the pipeline passes on."""
    from shmcam.camserver import alias

    from .__main__ import die_with_parent
    from .control import ReportHandler

    die_with_parent()
    faulthandler.enable()
    logging.basicConfig(level=logging.INFO, handlers=[ReportHandler()], force=True)
    alias.install()
    orders = json.loads(sys.stdin.readline())
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    spec, index = orders["spec"], orders["member"]
    member = Member(spec, index, RecordOutbox(spec, index))
    try:
        member.run(stop)
    finally:
        member.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
