"""A work board in shared memory: one producer posts items, members claim them, a collector
learns which results are final. What the workers of a parallel pipeline share, in processes or
threads alike, without a message per item.

- **Tickets.** The producer posts items as numbered tickets (an item is two int64 words: for a
  pipeline the frame's ring index and its pulse id). A member claims the oldest unclaimed
  ticket while it is at most MAX_BEHIND tickets behind the newest, else the newest, and the
  older ones are skipped (a reader's "recent" policy, slotring.py: a member that comes free
  never starts on a stale item). Members may instead work through a queue of the `queue`
  newest tickets, in order, skipping only older ones (CamServer's thread_buffer_size: more
  items done, later). No ticket is claimed twice and a slow item never holds the others
  back.
  A claim is a few words changed under an `flock` of the board's file: the kernel drops the
  lock of a member that dies, so a killed member never blocks the others.
- **Final results.** Each member shows the ticket it holds (`IDLE` when none). Claims go in
  ticket order, so every ticket below `bound()`, the smallest held ticket or the next one to
  be claimed, has had its result published or never will: a collector can put results back
  in ticket order without waiting for tickets that produce nothing.
- **Flow control of result rings.** A member that publishes its results in a ring of its own
  notes there which ticket each record answers, and writes record r only once the collector
  has released record r - record_slots (`wait_released`), so it never overwrites a result
  the collector still holds.

Waiting is on futex words (work posted, results published, records released): no spinning,
and a waiter wakes within about a millisecond.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import time
from contextlib import contextmanager
from typing import NamedTuple

from . import futex, segment
from .slotring import MAX_BEHIND

MAGIC = b"SHMCAMWB"
VERSION = 1
HEADER_SIZE = 128
_PREAMBLE = struct.Struct("<8sIIqQIII")  # segment preamble, members, ticket and record slots
IDLE = 2**63 - 1  # what a member holds when it holds no ticket

# int64 words of the header
_POSTED, _CLAIMED, _STOPPING, _EPOCH = 8, 9, 10, 11
# uint32 futex words of the header (in units of 4 bytes)
_WORK, _RESULTS, _SLOTS, _CLAIMS = 24, 25, 26, 27
# int64 words of a member, then its record_slots record tickets
_HOLDING, _RELEASED, _PID, _RESTARTS, _WAITING, _READY = range(6)
_MEMBER_WORDS = 8


class Claim(NamedTuple):
    ticket: int
    index: int  # the item's two words, as posted
    pulse_id: int
    skipped: int  # older tickets this claim passed over (nobody will take them)


class Board:
    """A board, created by its owner (the producer and collector) or attached by a member.

    Each attachment has its own lock descriptor: threads of one process attach separately
    to claim against each other."""

    def __init__(
        self,
        name: str,
        create: bool = False,
        members: int = 1,
        ticket_slots: int = 64,
        record_slots: int = 8,
        writable: bool = True,
    ):
        self.name = name
        if create:
            if members < 1 or ticket_slots < 2 or record_slots < 2:
                raise ValueError("a board needs a member, 2 ticket slots and 2 record slots")
            size = HEADER_SIZE + 16 * ticket_slots + 8 * members * (_MEMBER_WORDS + record_slots)

            def initialize(mm):
                _PREAMBLE.pack_into(
                    mm,
                    0,
                    MAGIC,
                    VERSION,
                    HEADER_SIZE,
                    os.getpid(),
                    time.time_ns(),
                    members,
                    ticket_slots,
                    record_slots,
                )
                for member in range(members):
                    offset = HEADER_SIZE + 16 * ticket_slots
                    offset += 8 * member * (_MEMBER_WORDS + record_slots)
                    struct.pack_into("<q", mm, offset, IDLE)

            mm = segment.create(name, size, initialize)
        else:
            mm, _ = segment.attach(name, writable=writable)
        magic, version, _, _, _, members, ticket_slots, record_slots = _PREAMBLE.unpack_from(mm)
        if magic != MAGIC or version != VERSION:
            mm.close()
            raise segment.ShmError(f"{name} is not a shmcam work board of version {VERSION}")
        self._owner = create
        self._mm: mmap.mmap | None = mm
        self.members, self.ticket_slots, self.record_slots = members, ticket_slots, record_slots
        self._q = memoryview(mm).cast("q")
        self._i = memoryview(mm)[:HEADER_SIZE].cast("I")
        self._tickets = HEADER_SIZE // 8
        self._stride = _MEMBER_WORDS + record_slots
        self._members = self._tickets + 2 * ticket_slots
        self._address = {
            w: futex.word_address(mm, 4 * w) for w in (_WORK, _RESULTS, _SLOTS, _CLAIMS)
        }
        self._fd = os.open(segment.SHM_DIR / name, os.O_RDWR) if writable else None

    def _member(self, member: int, word: int) -> int:
        if not 0 <= member < self.members:
            raise IndexError(f"member {member} of a board of {self.members}")
        return self._members + member * self._stride + word

    def _bump(self, word: int) -> None:
        self._i[word] = (self._i[word] + 1) & 0xFFFFFFFF
        futex.wake(self._address[word])

    def _wait(self, word: int, expected: int, timeout: float) -> None:
        if timeout > 0:
            futex.wait(self._address[word], expected, timeout)

    @contextmanager
    def _locked(self):
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    # --- the producer ------------------------------------------------------------------------
    @property
    def posted(self) -> int:
        return self._q[_POSTED]

    def post(self, index: int, pulse_id: int) -> int:
        """Post an item; returns its ticket. Never waits."""
        ticket = self._q[_POSTED]
        slot = self._tickets + 2 * (ticket % self.ticket_slots)
        self._q[slot], self._q[slot + 1] = index, pulse_id
        self._q[_POSTED] = ticket + 1
        self._bump(_WORK)
        return ticket

    def wait_claimed(self, timeout: float) -> bool:
        """Wait until every ticket posted is claimed (a producer that must not get ahead of
        its members); False after timeout or once the board stops."""
        q = self._q
        deadline = time.monotonic() + timeout
        while q[_CLAIMED] < q[_POSTED]:
            word = self._i[_CLAIMS]
            left = deadline - time.monotonic()
            if q[_STOPPING] or left <= 0:
                return False
            self._wait(_CLAIMS, word, left)
        return True

    def stop(self) -> None:
        """Members waiting for work (and any that ask later) get no more."""
        self._q[_STOPPING] = 1
        for word in (_WORK, _SLOTS, _CLAIMS):
            self._bump(word)

    @property
    def stopping(self) -> bool:
        return bool(self._q[_STOPPING])

    @property
    def epoch(self) -> int:
        """A counter the owner bumps to tell members something changed (a new config)."""
        return self._q[_EPOCH]

    def bump_epoch(self) -> None:
        self._q[_EPOCH] += 1

    # --- a member ----------------------------------------------------------------------------
    def claim(self, member: int, timeout: float, queue: int = 0) -> Claim | None:
        """The next ticket (the newest if the oldest unclaimed one is too far behind; with a
        `queue`, the oldest of the `queue` newest), now held by `member`; None after timeout
        or once the board stops."""
        q = self._q
        holding = self._member(member, _HOLDING)
        deadline = time.monotonic() + timeout
        while not q[_STOPPING]:
            word = self._i[_WORK]
            if q[_CLAIMED] < q[_POSTED]:
                with self._locked():
                    claimed, posted = q[_CLAIMED], q[_POSTED]
                    if claimed < posted:
                        if queue:
                            ticket = max(claimed, posted - queue)
                        elif posted - 1 - claimed <= MAX_BEHIND:
                            ticket = claimed
                        else:
                            ticket = posted - 1
                        slot = self._tickets + 2 * (ticket % self.ticket_slots)
                        q[holding] = ticket  # before the claim shows: bound() never skips it
                        q[_CLAIMED] = ticket + 1
                        self._bump(_CLAIMS)
                        return Claim(ticket, q[slot], q[slot + 1], ticket - claimed)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._wait(_WORK, word, left)
        return None

    def done(self, member: int) -> None:
        """The member published its result for the ticket it held, or has none to give."""
        self._q[self._member(member, _HOLDING)] = IDLE
        self._bump(_RESULTS)

    def note_record(self, member: int, record: int, ticket: int) -> None:
        """Record `record` of the member's result ring answers `ticket` (noted before the
        record is published)."""
        self._q[self._member(member, _MEMBER_WORDS + record % self.record_slots)] = ticket

    def wait_released(self, member: int, record: int, timeout: float) -> bool:
        """Wait until the member may write record `record` of its result ring (the collector
        released the one its slot holds); False after timeout or once the board stops."""
        q = self._q
        released, waiting = self._member(member, _RELEASED), self._member(member, _WAITING)
        deadline = time.monotonic() + timeout
        try:
            while record - q[released] >= self.record_slots:
                word = self._i[_SLOTS]
                q[waiting] = 1
                self._bump(_RESULTS)  # the collector looks at what it holds
                left = deadline - time.monotonic()
                if q[_STOPPING] or left <= 0:
                    return False
                self._wait(_SLOTS, word, left)
        finally:
            q[waiting] = 0
        return True

    # --- the collector -----------------------------------------------------------------------
    def bound(self) -> int:
        """The smallest ticket whose result may still come: every result of a ticket below
        it is published already, or will never be."""
        bound = self._q[_CLAIMED]  # first: a claim shows its held ticket before it counts
        for member in range(self.members):
            bound = min(bound, self._q[self._member(member, _HOLDING)])
        return bound

    def holding(self, member: int) -> int:
        return self._q[self._member(member, _HOLDING)]

    def record_ticket(self, member: int, record: int) -> int:
        return self._q[self._member(member, _MEMBER_WORDS + record % self.record_slots)]

    def release(self, member: int, released: int) -> None:
        """The collector is done with the member's records below `released`."""
        self._q[self._member(member, _RELEASED)] = released
        if self._q[self._member(member, _WAITING)]:
            self._bump(_SLOTS)

    def waiting(self, member: int) -> bool:
        """Whether the member waits for the collector to release a record."""
        return bool(self._q[self._member(member, _WAITING)])

    @property
    def results_word(self) -> int:
        return self._i[_RESULTS]

    def wait_results(self, word: int, timeout: float) -> None:
        """Sleep until a member publishes a result (the word moves on from `word`)."""
        self._wait(_RESULTS, word, timeout)

    def reset_member(self, member: int) -> None:
        """A member is to (re)start: it holds nothing, is not ready, and its result ring
        starts afresh."""
        for word, value in ((_HOLDING, IDLE), (_RELEASED, 0), (_WAITING, 0), (_READY, 0)):
            self._q[self._member(member, word)] = value
        self._bump(_RESULTS)

    def set_member_info(self, member: int, pid: int, restarts: int) -> None:
        self._q[self._member(member, _PID)] = pid
        self._q[self._member(member, _RESTARTS)] = restarts

    def member_info(self, member: int) -> tuple[int, int]:
        """(pid, restarts) of a member, as its owner last set them."""
        return self._q[self._member(member, _PID)], self._q[self._member(member, _RESTARTS)]

    def set_ready(self, member: int) -> None:
        """The member is set up and claims work from now on."""
        self._q[self._member(member, _READY)] = 1
        self._bump(_RESULTS)

    def ready(self, member: int) -> bool:
        return bool(self._q[self._member(member, _READY)])

    def close(self) -> None:
        """Detach; the creator also removes the board."""
        if self._mm is None:
            return
        if self._fd is not None:
            os.close(self._fd)
        self._q.release()
        self._i.release()
        self._mm.close()
        self._mm = None
        if self._owner:
            segment.unlink(self.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
