"""The collector of a parallel pipeline: takes the workers' results, puts them back in the
order of their frames and sends them as one bsread stream.

Order: results wait in a `Reorder` until the work board says nothing earlier can come
(`Board.bound`), or until more than `send_buffer_size` wait behind a missing one, which is
then given up (counted dropped if it comes after all).

Copies: a worker process's result is read in place from its record ring and sent from there
without a copy (ZMQ reads it from shared memory). A record is released to its worker once
ZMQ is done with it (`Sender(track=True)`), so the worker never overwrites what is being
sent. If a slow client keeps ZMQ from letting go of a worker's records, its later results go
out as copies, and one that must wait for an earlier result while its worker needs the slot
is copied out of the ring: a worker never waits for long.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np

from shmcam.shm import RecordReader
from shmcam.shm.board import Board

from . import split
from .member import Result, ThreadOutbox
from .reorder import Reorder


def _copied(data: dict) -> dict:
    return {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in data.items()}


class RecordInbox:
    """A worker process's results, read in place from its record ring; releases its records
    back to the worker in order."""

    def __init__(self, spec: dict, board: Board, member: int):
        base = split.results_base(spec["node"], spec["instance_id"], member)
        self.reader = RecordReader(base, timeout=10)
        self.board, self.member = board, member
        self.incarnation = 0
        self.entries: deque[list] = deque()  # [record, released, incarnation, result]
        self.next_record = 0
        self.pinned: deque[tuple] = deque()  # (tracker, result): ZMQ still reads them

    def drain(self) -> Iterator[Result]:
        while True:
            record = self.reader.wait(timeout=0)
            if record is None:
                return
            ticket = self.board.record_ticket(self.member, record.index)
            entry = [record.index, False, self.incarnation, None]
            result = Result(ticket, record.pulse_id, record.timestamp, record.data, self, entry)
            entry[3] = result
            self.entries.append(entry)
            self.next_record = record.index + 1
            yield result

    def release(self, entry: list) -> None:
        if entry[2] != self.incarnation or entry[1]:
            return  # a dead worker's: its successor has a ring of its own
        entry[1] = True
        entries = self.entries
        while entries and entries[0][1]:
            entries.popleft()
        self.board.release(self.member, entries[0][0] if entries else self.next_record)

    def pin(self, tracker, result: Result) -> None:
        self.pinned.append((tracker, result))

    def unpin(self) -> None:
        """Release what ZMQ has let go of."""
        while self.pinned and self.pinned[0][0].done:
            self.pinned.popleft()[1].release()

    def relieve(self) -> bool:
        """The worker waits for a slot: copy out its oldest result if it only waits for its
        turn (not held by ZMQ). True if it did."""
        if not self.entries or not self.board.waiting(self.member):
            return False
        result = self.entries[0][3]
        if any(r is result for _, r in self.pinned):
            return False
        result.data = _copied(result.data)
        result.release()
        return True

    def renew(self) -> None:
        """The worker died: its successor writes a new ring from record 0."""
        self.incarnation += 1
        self.entries.clear()
        self.pinned.clear()  # ZMQ may still read them: the old ring stays mapped meanwhile
        self.next_record = 0

    def close(self) -> None:
        self.reader.close()


class ThreadInbox:
    """A worker thread's results, handed over as dicts."""

    pinned = ()

    def __init__(self, outbox: ThreadOutbox):
        self.results = outbox.results

    def drain(self) -> Iterator[Result]:
        while self.results:
            yield self.results.popleft()

    def unpin(self) -> None:
        pass

    def relieve(self) -> bool:
        return False

    def renew(self) -> None:
        pass

    def close(self) -> None:
        pass


class Collector:
    def __init__(self, board: Board, inboxes: list, output, window: int, zero_copy: bool):
        self.board, self.inboxes, self.output = board, inboxes, output
        self.reorder = Reorder(window)
        self.zero_copy = zero_copy
        self.pin_limit = max(1, board.record_slots // 2)
        self.late = 0  # results that came after a later one had been sent

    def take(self, member: int | None = None) -> None:
        """Take the results published so far (of one worker, or of all)."""
        inboxes = self.inboxes if member is None else [self.inboxes[member]]
        for inbox in inboxes:
            inbox.unpin()
            for result in inbox.drain():
                if not self.reorder.add(result.ticket, result):
                    self.late += 1
                    result.release()
            inbox.relieve()

    def ready(self) -> Iterator[Result]:
        """The results to send now, in order. The bound is read before the workers' rings:
        a result published before its worker moved past it is taken in the same round."""
        bound = self.board.bound()
        self.take()
        yield from self.reorder.ready(bound)

    def send(self, result: Result) -> bool:
        """Send a result and let go of it once ZMQ has (zero-copy) or at once (a copy)."""
        inbox, data = result.inbox, result.data
        copy = inbox is not None and len(inbox.pinned) >= self.pin_limit
        sent = self.output.send(_copied(data) if copy else data, result.pulse_id, result.timestamp)
        tracker = self.output.tracker if self.zero_copy and sent and not copy else None
        if tracker is not None and not tracker.done:
            inbox.pin(tracker, result)
        else:
            result.release()
        return sent

    def waits_on_zmq(self) -> bool:
        """Whether a worker waits for a record ZMQ still holds (poll soon)."""
        return any(
            inbox.pinned and self.board.waiting(member) for member, inbox in enumerate(self.inboxes)
        )

    def forget(self, member: int) -> None:
        """A worker died: take what it published, then expect a new ring from its successor."""
        self.take(member)
        self.inboxes[member].renew()

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.close()
