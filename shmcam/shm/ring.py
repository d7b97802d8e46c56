"""Single-writer, many-reader frame ring in shared memory.

The writer copies each frame once into the next slot and never waits for anyone. A slot's
sequence word works as a seqlock: odd while the writer fills it, 2n+2 once frame n is complete.
Readers get read-only numpy views into the slots (no copy) and check the sequence word again
after use, so a frame overwritten under a slow reader is detected and discarded, never used.

A ring has one geometry (dtype and shape). When the writer's frames change geometry, or a new
writer starts for the same ring (camera restarted), a new segment *generation* is created and
the old one is marked superseded; readers follow to the newest generation by themselves.
Frame numbering continues across geometry changes of one writer.
"""

from __future__ import annotations

import logging
import mmap
import os
import time

import numpy as np

from . import futex, layout, segment
from .layout import CLOSED, LIVE, SUPERSEDED

log = logging.getLogger(__name__)

DEFAULT_SLOTS = 8
_RECHECK_S = 0.25  # how often a waiting reader looks for a successor of a silent ring


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


class Frame:
    """One frame as a reader sees it: metadata plus a read-only view into its slot."""

    __slots__ = ("index", "pulse_id", "timestamp", "image", "published_ns", "axes", "_map", "_slot")

    def __init__(self, index, pulse_id, timestamp, image, published_ns, axes, mapping, slot):
        self.index = index  # frame number over the ring's life
        self.pulse_id = pulse_id
        self.timestamp = timestamp  # (sec, ns) of the frame's global timestamp
        self.image = image  # read-only numpy view into shared memory
        self.published_ns = published_ns  # CLOCK_MONOTONIC when the writer completed it
        self.axes = axes  # (x0, dx, y0, dy): x_axis[i] = x0 + i*dx; or None
        self._map = mapping
        self._slot = slot

    def __repr__(self):
        return (
            f"Frame(index={self.index}, pulse_id={self.pulse_id}, "
            f"shape={self.image.shape}, dtype={self.image.dtype})"
        )


class _Mapping:
    """One mapped generation: header fields, per-slot headers and per-slot payload views."""

    def __init__(self, name: str, mm: mmap.mmap, inode: int | None = None):
        self.name = name
        self.mm = mm
        self.inode = inode
        fields = layout.HEADER.unpack_from(mm, 0)
        (
            magic,
            version,
            header_size,
            self.owner_pid,
            _created,
            self.slots,
            slot_header_size,
            self.stride,
            _capacity,
            self.generation,
            _ws,
            _fs,
            _state,
            _futex,
            dtype,
            ndim,
            *shape,
            self.nbytes,
            _reserved,
        ) = fields
        if magic != layout.MAGIC or version != layout.VERSION:
            raise segment.ShmError(
                f"{name} is not a shmcam ring of layout version {layout.VERSION} "
                f"(magic {magic!r}, version {version})"
            )
        if header_size != layout.HEADER_SIZE or slot_header_size != layout.SLOT_HEADER_SIZE:
            raise segment.ShmError(f"{name}: unexpected header sizes")
        self.dtype = layout.dtype_from_code(dtype)
        self.shape = tuple(shape[:ndim])
        buf = memoryview(mm)
        self.header_q = buf[: layout.HEADER_SIZE].cast("q")
        self.header_i = buf[: layout.HEADER_SIZE].cast("I")
        self.slot_bufs = []
        self.slot_q = []
        self.views = []
        count = int(np.prod(self.shape))
        for i in range(self.slots):
            start = layout.HEADER_SIZE + i * self.stride
            slot_buf = buf[start : start + layout.SLOT_HEADER_SIZE]
            self.slot_bufs.append(slot_buf)
            self.slot_q.append(slot_buf.cast("q"))
            self.views.append(
                np.frombuffer(mm, self.dtype, count, start + layout.SLOT_HEADER_SIZE).reshape(
                    self.shape
                )
            )
        self.futex_address = np.frombuffer(mm, np.uint32, 1, layout.OFF_FUTEX).ctypes.data
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

    def close(self) -> None:
        """Unmap, unless the caller still holds frame views: then the map lives until they die.

        mmap refuses to close while numpy views export its buffer (BufferError), which is
        exactly what keeps a late use of a view from segfaulting.
        """
        for mv in (*self.slot_q, *self.slot_bufs, self.header_q, self.header_i, self._buf):
            mv.release()
        self.views = self.slot_q = self.slot_bufs = []
        try:
            self.mm.close()
        except BufferError:
            log.debug("%s: frame views still alive; unmapped when they are released", self.name)


def _bump_futex(m: _Mapping) -> None:
    m.header_i[layout.OFF_FUTEX // 4] = (m.futex_word + 1) & 0xFFFFFFFF
    futex.wake(m.futex_address)


class _RingEnd:
    """What the writer and readers share: the identity and geometry of the mapped generation."""

    _map: _Mapping | None

    @property
    def name(self) -> str:
        return self._map.name

    @property
    def dtype(self) -> np.dtype:
        return self._map.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self._map.shape

    @property
    def generation(self) -> int:
        return self._map.generation

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RingWriter(_RingEnd):
    """The one writer of a ring. `write()` copies a frame into the next slot and publishes it."""

    def __init__(self, base: str, dtype, shape, slots: int = DEFAULT_SLOTS):
        if slots < 2:
            raise ValueError("a ring needs at least 2 slots")
        self.base = base
        self.slots = slots
        self._map: _Mapping | None = None
        older = generations(base)
        self._open_generation(
            (older[-1] + 1) if older else 0, np.dtype(dtype), tuple(shape), first_seq=0
        )
        for gen in older:  # a previous writer of this ring (crashed or restarted): retire it
            _retire(generation_name(base, gen))

    @property
    def frames_written(self) -> int:
        return self._map.write_seq

    def _open_generation(self, generation: int, dtype: np.dtype, shape, first_seq: int) -> None:
        fields = layout.shape_fields(shape)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        stride = layout.align(layout.SLOT_HEADER_SIZE + nbytes)
        name = generation_name(self.base, generation)

        def write_header(mm):
            layout.HEADER.pack_into(
                mm,
                0,
                layout.MAGIC,
                layout.VERSION,
                layout.HEADER_SIZE,
                os.getpid(),
                time.time_ns(),
                self.slots,
                layout.SLOT_HEADER_SIZE,
                stride,
                stride - layout.SLOT_HEADER_SIZE,
                generation,
                first_seq,
                first_seq,
                LIVE,
                0,
                layout.dtype_code(dtype),
                *fields,
                nbytes,
                0,
            )

        mm = segment.create(name, layout.HEADER_SIZE + self.slots * stride, write_header)
        self._map = _Mapping(name, mm)
        self._geometry = (dtype, tuple(shape))
        self._dtype_code = layout.dtype_code(dtype)
        self._shape_fields = fields

    def write(
        self,
        image: np.ndarray,
        pulse_id: int,
        timestamp: tuple[int, int],
        axes: tuple[float, float, float, float] | None = None,
    ) -> int:
        """Copy image into the next slot and publish it; returns the frame number.

        `axes` = (x0, dx, y0, dy) describes linear (e.g. calibrated) axes of the frame; None
        means pixel numbers. Never blocks on readers. A frame of another dtype or shape opens
        a new generation.
        """
        if (image.dtype, image.shape) != self._geometry:
            self._change_geometry(image.dtype, image.shape)
        m = self._map
        n = m.write_seq
        slot = n % m.slots
        seq = m.slot_q[slot]
        seq[0] = 2 * n + 1  # readers of this slot now see it as torn
        np.copyto(m.views[slot], image, casting="no")
        layout.SLOT_META.pack_into(
            m.slot_bufs[slot],
            layout.OFF_SLOT_META,
            pulse_id,
            timestamp[0],
            timestamp[1],
            time.monotonic_ns(),
            m.nbytes,
            self._dtype_code,
            *self._shape_fields,
            *(axes or layout.NO_AXES),
        )
        seq[0] = 2 * n + 2  # complete
        m.header_q[layout.OFF_WRITE_SEQ // 8] = n + 1
        _bump_futex(m)
        return n

    def _change_geometry(self, dtype: np.dtype, shape) -> None:
        old = self._map
        log.info(
            "%s: geometry %s %s -> %s %s, new generation %d",
            self.base,
            old.dtype,
            old.shape,
            dtype,
            shape,
            old.generation + 1,
        )
        self._open_generation(old.generation + 1, dtype, shape, first_seq=old.write_seq)
        _set_state(old, SUPERSEDED)
        segment.unlink(old.name)
        old.close()

    def close(self, unlink: bool = True) -> None:
        """Mark the ring closed (readers stop waiting for it) and, normally, remove it."""
        if self._map is None:
            return
        _set_state(self._map, CLOSED)
        if unlink:
            segment.unlink(self._map.name)
        self._map.close()
        self._map = None


def _set_state(m: _Mapping, state: int) -> None:
    m.header_i[layout.OFF_STATE // 4] = state
    _bump_futex(m)


def _retire(name: str) -> None:
    """Mark a leftover generation superseded so its readers move on, then remove it."""
    try:
        m = _Mapping(name, *segment.attach(name, writable=True))
    except (FileNotFoundError, ValueError, segment.ShmError):
        segment.unlink(name)
        return
    _set_state(m, SUPERSEDED)
    segment.unlink(name)
    m.close()


class RingReader(_RingEnd):
    """A reader of a ring, attached by base name; follows new generations by itself.

    policy "sequential" hands out every frame in order while the reader keeps up, and when the
    writer laps it jumps to the newest frame, counting the frames it skipped in `missed`.
    policy "latest" always hands out the newest frame (live viewers).
    """

    def __init__(self, base: str, policy: str = "sequential", timeout: float = 0.0):
        if policy not in ("sequential", "latest"):
            raise ValueError(f"unknown reader policy {policy!r}: use 'sequential' or 'latest'")
        self.base = base
        self.policy = policy
        self.received = 0
        self.missed = 0
        self.torn = 0
        self._map: _Mapping | None = None
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
        """Frames published that this reader has not reached yet."""
        return max(0, self._map.write_seq - self._next)

    def writer_alive(self) -> bool:
        return self._map.state == LIVE and segment.pid_alive(self._map.owner_pid)

    def _attach_newest(self, start_at_newest: bool) -> bool:
        """Map the newest generation if it is another segment than ours; True if switched."""
        gens = generations(self.base)
        if not gens:
            return False
        name = generation_name(self.base, gens[-1])
        if self._map is not None and segment.inode(name) == self._map.inode:
            return False
        try:
            m = _Mapping(name, *segment.attach(name))
        except FileNotFoundError:  # retired between listing and opening
            return False
        if m.state != LIVE:
            m.close()
            return False
        old, self._map = self._map, m
        if start_at_newest:
            self._next = m.write_seq
        else:
            # A successor: after a geometry change numbering continues (first_seq follows our
            # position); after a writer restart it starts again, and nothing counts as missed.
            self.missed += max(0, m.first_seq - self._next)
            self._next = m.first_seq
        if old is not None:
            log.info("%s: following the writer to generation %d", self.base, m.generation)
            old.close()
        return True

    def wait(self, timeout: float | None = None) -> Frame | None:
        """The next frame (per policy), or None if none arrived within timeout seconds.

        A superseded generation is read to its end before the reader moves to the successor.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            m = self._map
            word = m.futex_word
            if m.write_seq > self._next:
                frame = self._take(m)
                if frame is not None:
                    return frame
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

    def _take(self, m: _Mapping) -> Frame | None:
        latest = m.write_seq
        n = self._next
        if self.policy == "latest" or latest - n >= m.slots:
            self.missed += latest - 1 - n
            n = latest - 1
        self._next = n + 1
        frame = _read(m, n)
        if frame is None:  # overwritten since we looked: lapped, the loop moves on
            self.missed += 1
        else:
            self.received += 1
        return frame

    def skip_to_newest(self) -> None:
        """Continue with frames published from now on, without counting the ones passed over
        as missed (e.g. after a slow start-up, before the reader's real work begins)."""
        self._next = self._map.write_seq

    def validate(self, frame: Frame) -> bool:
        """After using a frame: True if it was intact throughout; False (counted torn) if the
        writer started overwriting its slot meanwhile, in which case the result must be dropped.

        A frame of a retired generation is intact: no writer touches a generation after it
        has been superseded.
        """
        m = frame._map
        intact = m is not self._map or m.slot_q[frame._slot][0] == 2 * frame.index + 2
        if not intact:
            self.torn += 1
        return intact

    def latest(self) -> Frame | None:
        """The newest complete frame without waiting or moving the reader (snapshots)."""
        m = self._map
        n = m.write_seq - 1
        return _read(m, n) if n >= m.first_seq else None

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None


def _read(m: _Mapping, n: int) -> Frame | None:
    """Frame n if its slot holds it complete (seqlock read of the metadata), else None."""
    slot = n % m.slots
    seq = m.slot_q[slot]
    if seq[0] != 2 * n + 2:
        return None
    pulse_id, sec, ns, published, *axes = layout.SLOT_READ.unpack_from(
        m.slot_bufs[slot], layout.OFF_SLOT_META
    )
    if seq[0] != 2 * n + 2:
        return None
    return Frame(
        n,
        pulse_id,
        (sec, ns),
        m.views[slot],
        published,
        None if axes[1] == axes[3] == 0.0 else tuple(axes),
        m,
        slot,
    )
