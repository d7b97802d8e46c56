"""What frame rings and record rings share: generations of slots under a seqlock.

One writer copies each item once into the next slot and never waits for anyone. A slot's
sequence word works as a seqlock: odd while the writer fills it, 2n+2 once item n is complete.
Readers use the slot in place and check the sequence word again after use, so an item
overwritten under a slow reader is detected and discarded, never used.

A ring lives in segments named `<base>.g<N>`, its generations. The writer opens a new one when
its items outgrow the current one (a frame of another geometry, a record larger than a slot),
and a new writer of the same base (a restarted camera) retires its predecessor's. Superseded
generations are unlinked; readers follow to the newest by themselves. The kinds differ only in
what a slot holds: see ring.py (frames) and records.py (records).
"""

from __future__ import annotations

import logging
import mmap
import os
import time

from . import futex, layout, segment
from .layout import CLOSED, LIVE, SUPERSEDED

log = logging.getLogger(__name__)

DEFAULT_SLOTS = 8
_RECHECK_S = 0.25  # how often a waiting reader looks for a successor of a silent ring
_RING_MAGICS = (layout.MAGIC, layout.RECORDS_MAGIC)
POLICIES = ("sequential", "latest", "recent")
# How far behind the newest item a "recent" reader goes on in order (and a member of a work
# board claims in order, board.py): one item absorbs a hiccup of one period, and an item is
# never more than two periods old when it is taken.
MAX_BEHIND = 1


def ring_base(node: str, instance: str, *role: str) -> str:
    """The name all generations of an instance's ring share: 'shmcam.node1.cam1' for a
    camera's frames, 'shmcam.node1.beam.preview' for a ring with a role (a pipeline's
    preview). Parts hold no dots, so the two kinds can never collide."""
    return segment.segment_name(node, instance, *role)


def generation_name(base: str, generation: int) -> str:
    return f"{base}.g{generation}"


def generations(base: str) -> list[int]:
    """Existing generations of a ring, oldest first."""
    prefix = base + ".g"
    found = []
    for name in segment.list_segments(prefix):
        suffix = name[len(prefix) :]
        if suffix.isdigit():
            found.append(int(suffix))
    return sorted(found)


class Mapping:
    """One mapped generation: the common header's fields and one buffer per slot.

    Subclasses check their magic and version, and read what follows the common header.
    """

    KIND = "shmcam ring"
    MAGIC = b""
    VERSION = 0
    HEADER_SIZE = layout.HEADER_SIZE
    SLOT_HEADER_SIZE = 0

    def __init__(self, name: str, mm: mmap.mmap, inode: int | None = None):
        self.name = name
        self.mm = mm
        self.inode = inode
        (
            magic,
            version,
            header_size,
            self.owner_pid,
            _created,
            self.slots,
            slot_header_size,
            self.stride,
            self.capacity,
            self.generation,
            *_,
        ) = layout.COMMON_HEADER.unpack_from(mm, 0)
        if magic != self.MAGIC or version != self.VERSION:
            raise segment.ShmError(
                f"{name} is not a {self.KIND} of layout version {self.VERSION} "
                f"(magic {magic!r}, version {version})"
            )
        if (
            header_size != self.HEADER_SIZE
            or slot_header_size != self.SLOT_HEADER_SIZE
            or self.slots < 1
            or self.stride != self.capacity + slot_header_size
            or self.stride % layout.ALIGN
            or len(mm) < header_size + self.slots * self.stride
        ):
            raise segment.ShmError(f"{name}: inconsistent header sizes")
        buf = memoryview(mm)
        self.header_q = buf[:header_size].cast("q")
        self.header_i = buf[:header_size].cast("I")
        self.slot_bufs = []
        self.slot_q = []
        for i in range(self.slots):
            start = header_size + i * self.stride
            slot_buf = buf[start : start + self.stride]
            self.slot_bufs.append(slot_buf)
            self.slot_q.append(slot_buf[:8].cast("q"))
        self.futex_address = futex.word_address(mm, layout.OFF_FUTEX)
        self._buf = buf

    @property
    def write_seq(self) -> int:
        return self.header_q[layout.OFF_WRITE_SEQ // 8]

    @property
    def first_seq(self) -> int:
        return self.header_q[layout.OFF_FIRST_SEQ // 8]

    @property
    def state(self) -> int:
        return self.header_i[layout.OFF_STATE // 4]

    @property
    def futex_word(self) -> int:
        return self.header_i[layout.OFF_FUTEX // 4]

    def release_views(self) -> None:
        """Drop the numpy views a subclass keeps into the slots."""

    def close(self) -> None:
        """Unmap, unless the caller still holds views of items: then the map lives until they
        die. mmap refuses to close while numpy views export its buffer (BufferError), which is
        exactly what keeps a late use of a view from segfaulting.
        """
        self.release_views()
        for mv in (*self.slot_q, *self.slot_bufs, self.header_q, self.header_i, self._buf):
            mv.release()
        self.slot_q = self.slot_bufs = []
        try:
            self.mm.close()
        except BufferError:
            log.debug("%s: item views still alive; unmapped when they are released", self.name)


def bump_futex(m: Mapping) -> None:
    m.header_i[layout.OFF_FUTEX // 4] = (m.futex_word + 1) & 0xFFFFFFFF
    futex.wake(m.futex_address)


def set_state(m: Mapping, state: int) -> None:
    m.header_i[layout.OFF_STATE // 4] = state
    bump_futex(m)


class RingEnd:
    """What the writer and readers share: the mapped generation."""

    _map: Mapping | None

    @property
    def name(self) -> str:
        return self._map.name

    @property
    def generation(self) -> int:
        return self._map.generation

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Writer(RingEnd):
    """The one writer of a ring: creates generations, publishes items, retires what it replaces.

    Subclasses fill a slot between `begin()` and `commit()`.
    """

    MAPPING: type[Mapping] = Mapping

    def __init__(self, base: str, slots: int):
        if slots < 2:
            raise ValueError("a ring needs at least 2 slots")
        self.base = base
        self.slots = slots
        self._map: Mapping | None = None

    @property
    def items_written(self) -> int:
        return self._map.write_seq

    def _create(self, generation: int, capacity: int, first_seq: int, tail: bytes) -> None:
        """Create generation `generation` with slots of `capacity` payload bytes; `tail` is
        the kind's part of the header after the common one."""
        slot_header = self.MAPPING.SLOT_HEADER_SIZE
        stride = layout.align(slot_header + capacity)

        def write_header(mm):
            layout.COMMON_HEADER.pack_into(
                mm,
                0,
                self.MAPPING.MAGIC,
                self.MAPPING.VERSION,
                self.MAPPING.HEADER_SIZE,
                os.getpid(),
                time.time_ns(),
                self.slots,
                slot_header,
                stride,
                stride - slot_header,
                generation,
                first_seq,
                first_seq,
                LIVE,
                0,
            )
            mm[layout.COMMON_HEADER.size : layout.COMMON_HEADER.size + len(tail)] = tail

        name = generation_name(self.base, generation)
        mm = segment.create(name, self.MAPPING.HEADER_SIZE + self.slots * stride, write_header)
        self._map = self.MAPPING(name, mm)

    def _start(self, capacity: int, tail: bytes) -> None:
        """Open this writer's first generation, after any left by a predecessor, and retire
        theirs (a crashed or restarted writer, or the placeholder the supervisor made)."""
        older = generations(self.base)
        self._create((older[-1] + 1) if older else 0, capacity, 0, tail)
        for gen in older:
            retire(generation_name(self.base, gen))

    def _replace(self, capacity: int, tail: bytes, why: str) -> None:
        """Continue in a new generation (numbering goes on); the old one is superseded."""
        old = self._map
        log.info("%s: %s, new generation %d", self.base, why, old.generation + 1)
        self._create(old.generation + 1, capacity, old.write_seq, tail)
        set_state(old, SUPERSEDED)
        segment.unlink(old.name)
        old.close()

    def begin(self) -> tuple[int, int]:
        """Start writing the next item: its number and slot; readers of the slot see it torn."""
        m = self._map
        n = m.write_seq
        slot = n % m.slots
        m.slot_q[slot][0] = 2 * n + 1
        return n, slot

    def commit(self, n: int, slot: int) -> None:
        """Publish item n and wake the readers."""
        m = self._map
        m.slot_q[slot][0] = 2 * n + 2
        m.header_q[layout.OFF_WRITE_SEQ // 8] = n + 1
        bump_futex(m)

    def close(self, unlink: bool = True) -> None:
        """Mark the ring closed (readers stop waiting for it) and, normally, remove it."""
        if self._map is None:
            return
        set_state(self._map, CLOSED)
        if unlink:
            segment.unlink(self._map.name)
        self._map.close()
        self._map = None


def retire(name: str, state: int = SUPERSEDED) -> None:
    """Mark a generation (superseded: its readers move on; closed: they stop), then remove it."""
    try:
        mm, _ = segment.attach(name, writable=True)
    except FileNotFoundError:
        return
    try:
        if len(mm) >= layout.COMMON_HEADER.size and bytes(mm[:8]) in _RING_MAGICS:
            header_i = memoryview(mm)[: layout.COMMON_HEADER.size].cast("I")
            header_i[layout.OFF_STATE // 4] = state
            header_i[layout.OFF_FUTEX // 4] = (header_i[layout.OFF_FUTEX // 4] + 1) & 0xFFFFFFFF
            futex.wake(futex.word_address(mm, layout.OFF_FUTEX))
            header_i.release()
    finally:
        segment.unlink(name)
        mm.close()


def remove_ring(base: str) -> list[str]:
    """Close and remove every generation of a ring (what its owner does when it is done with
    it: the supervisor, for the output ring of an external program that may have died)."""
    removed = []
    for gen in generations(base):
        name = generation_name(base, gen)
        retire(name, CLOSED)
        removed.append(name)
    return removed


class Reader(RingEnd):
    """A reader of a ring, attached by base name; follows new generations by itself.

    policy "sequential" hands out every item in order while the reader keeps up, and when the
    writer laps it jumps to the newest item, counting the items it skipped in `missed`.
    policy "latest" always hands out the newest item (live viewers).
    policy "recent" (processing pipelines) hands out items in order while the reader is at
    most MAX_BEHIND items behind the newest, else the newest, counting the ones it skips: a
    reader that cannot keep up works on fresh items only, and one delayed for a moment
    catches up instead of losing items.
    Subclasses say how to read item n (`_read`), which returns None if it is not there.
    """

    MAPPING: type[Mapping] = Mapping

    def __init__(self, base: str, policy: str = "sequential", timeout: float = 0.0):
        if policy not in POLICIES:
            raise ValueError(f"unknown reader policy {policy!r}: use one of {', '.join(POLICIES)}")
        self.base = base
        self.policy = policy
        self.received = 0
        self.missed = 0
        self.torn = 0
        self._map: Mapping | None = None
        self._next = 0
        deadline = time.monotonic() + timeout
        while not self._attach_newest(start_at_newest=True):
            if time.monotonic() >= deadline:
                raise FileNotFoundError(f"no ring named {base} in {segment.SHM_DIR}")
            time.sleep(0.01)

    @property
    def slots(self) -> int:
        return self._map.slots

    @property
    def lag(self) -> int:
        """Items published that this reader has not reached yet."""
        return max(0, self._map.write_seq - self._next)

    def writer_alive(self) -> bool:
        return self._map.state == LIVE and segment.pid_alive(self._map.owner_pid)

    def _attach_newest(self, start_at_newest: bool) -> bool:
        """Map the newest generation if it is another segment than ours; True if switched.
        A closed one counts: what its writer published before it stopped is there to read."""
        gens = generations(self.base)
        if not gens:
            return False
        name = generation_name(self.base, gens[-1])
        if self._map is not None and segment.inode(name) == self._map.inode:
            return False
        try:
            m = self.MAPPING(name, *segment.attach(name))
        except FileNotFoundError:  # retired between listing and opening
            return False
        if m.state == SUPERSEDED:  # being replaced as we look: its successor comes next
            m.close()
            return False
        old, self._map = self._map, m
        if start_at_newest:
            self._next = m.write_seq
        else:
            # A successor: after a new generation of the same writer numbering continues
            # (first_seq follows our position); after a writer restart it starts again, and
            # nothing counts as missed.
            self.missed += max(0, m.first_seq - self._next)
            self._next = m.first_seq
        if old is not None:
            log.info("%s: following the writer to generation %d", self.base, m.generation)
            old.close()
        return True

    def wait(self, timeout: float | None = None):
        """The next item (per policy), or None if none arrived within timeout seconds.

        A superseded generation is read to its end before the reader moves to the successor.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            m = self._map
            word = m.futex_word
            if m.write_seq > self._next:
                item = self._take(m)
                if item is not None:
                    return item
                continue
            if m.state != LIVE and self._attach_newest(start_at_newest=False):
                continue
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            pause = _RECHECK_S if deadline is None else min(_RECHECK_S, deadline - now)
            if m.state == LIVE:
                futex.wait(m.futex_address, word, pause)
                if m.futex_word == word:  # silent: is another writer's ring there now?
                    self._attach_newest(start_at_newest=False)
            else:
                time.sleep(min(pause, 0.01))  # writer gone: poll for its successor

    def _take(self, m: Mapping):
        latest = m.write_seq
        n = self._next
        behind = latest - 1 - n
        if (
            self.policy == "latest"
            or (self.policy == "recent" and behind > MAX_BEHIND)
            or behind >= m.slots - 1
        ):
            self.missed += latest - 1 - n
            n = latest - 1
        self._next = n + 1
        item = self._read(m, n)
        if item is None:  # overwritten since we looked: lapped, the loop moves on
            self.missed += 1
        else:
            self.received += 1
        return item

    def _read(self, m: Mapping, n: int):
        raise NotImplementedError

    def published(self) -> tuple[int | None, int]:
        """What the writer has published, as a token that changes with every item (and with
        a new writer): the newest generation's inode and its write_seq. Nothing is read and
        the reader's position does not move: for watching whether a ring is being fed."""
        self._attach_newest(start_at_newest=False)
        return self._map.inode, self._map.write_seq

    def skip_to_newest(self) -> None:
        """Continue with items published from now on, without counting the ones passed over
        as missed (e.g. after a slow start-up, before the reader's real work begins)."""
        self._next = self._map.write_seq

    def validate(self, item) -> bool:
        """After using an item: True if it was intact throughout; False (counted torn) if the
        writer started overwriting its slot meanwhile, in which case the result must be dropped.

        An item of a retired generation is intact: no writer touches a generation after it
        has been superseded.
        """
        intact = self.intact(item)
        if not intact:
            self.torn += 1
        return intact

    def copied(self, item) -> bool:
        """After copying an item out, before any work on it: True if the copy is whole;
        False if the writer overwrote the item meanwhile, counted missed (no work was lost
        on it, unlike a torn item)."""
        intact = self.intact(item)
        if not intact:
            self.missed += 1
        return intact

    def intact(self, item) -> bool:
        """Whether the item is still complete in its slot (not counted either way)."""
        m = item._map
        return m is not self._map or m.slot_q[item._slot][0] == 2 * item.index + 2

    def item(self, n: int):
        """Item n, in place, if the ring still holds it complete; else None, counted missed.
        For readers told which item to take (the workers of a parallel pipeline, whose
        dispatcher read the ring first): the writer may have moved to a newer generation."""
        m = self._map
        if n >= m.write_seq and m.state != LIVE:
            self._next = n
            self._attach_newest(start_at_newest=False)
            m = self._map
        self._next = n + 1
        item = self._read(m, n) if m.first_seq <= n < m.write_seq else None
        if item is None:
            self.missed += 1
        else:
            self.received += 1
        return item

    def latest(self):
        """The newest complete item without waiting or moving the reader (snapshots)."""
        m = self._map
        n = m.write_seq - 1
        return self._read(m, n) if n >= m.first_seq else None

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
