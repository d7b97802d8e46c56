"""Single-writer, many-reader frame ring in shared memory.

The writer copies each frame once into the next slot and never waits for anyone (the seqlock,
generations and reader policies are slotring.py's). Readers get read-only numpy views into the
slots (no copy) and check the sequence word again after use, so a frame overwritten under a slow
reader is detected and discarded, never used.

A ring has one geometry (dtype and shape). When the writer's frames change geometry, or a new
writer starts for the same ring (camera restarted), a new segment *generation* is created and
the old one is marked superseded; readers follow to the newest generation by themselves.
Frame numbering continues across geometry changes of one writer.
"""

from __future__ import annotations

import time

import numpy as np

from . import layout, segment
from .slotring import DEFAULT_SLOTS, Mapping, Reader, Writer, generations, ring_base

__all__ = ["DEFAULT_SLOTS", "Frame", "RingReader", "RingWriter", "generations", "ring_base"]


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


class _FrameMapping(Mapping):
    """A mapped frame ring generation: its geometry and one payload view per slot."""

    KIND = "shmcam frame ring"
    MAGIC = layout.MAGIC
    VERSION = layout.VERSION
    SLOT_HEADER_SIZE = layout.SLOT_HEADER_SIZE

    def __init__(self, name, mm, inode=None):
        super().__init__(name, mm, inode)
        dtype, ndim, *shape, self.nbytes, _reserved = layout.FRAME_GEOMETRY.unpack_from(
            mm, layout.COMMON_HEADER.size
        )
        self.dtype = layout.dtype_from_code(dtype)
        self.shape = tuple(shape[:ndim])
        count = int(np.prod(self.shape))
        if count * self.dtype.itemsize != self.nbytes or self.nbytes > self.capacity:
            raise segment.ShmError(
                f"{name}: {self.shape} {self.dtype} frames are not {self.nbytes} bytes "
                f"in slots of {self.capacity}"
            )
        self.views = [
            np.frombuffer(
                mm, self.dtype, count, layout.HEADER_SIZE + i * self.stride + self.SLOT_HEADER_SIZE
            ).reshape(self.shape)
            for i in range(self.slots)
        ]

    def release_views(self) -> None:
        self.views = []


class _Geometry:
    """A frame geometry as the writer stores it; refuses what a ring cannot hold."""

    def __init__(self, dtype: np.dtype, shape: tuple[int, ...]):
        self.key = (dtype, shape)  # what a frame is compared with
        self.shape_fields = layout.shape_fields(shape)
        self.dtype_code = layout.dtype_code(dtype)
        self.nbytes = int(np.prod(shape)) * dtype.itemsize
        self.tail = layout.FRAME_GEOMETRY.pack(self.dtype_code, *self.shape_fields, self.nbytes, 0)


class RingWriter(Writer):
    """The one writer of a ring. `write()` copies a frame into the next slot and publishes it."""

    MAPPING = _FrameMapping

    def __init__(self, base: str, dtype, shape, slots: int = DEFAULT_SLOTS):
        super().__init__(base, slots)
        self._geometry = _Geometry(np.dtype(dtype), tuple(shape))
        self._start(self._geometry.nbytes, self._geometry.tail)

    @property
    def frames_written(self) -> int:
        return self.items_written

    @property
    def dtype(self) -> np.dtype:
        return self._map.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self._map.shape

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
        g = self._geometry
        if (image.dtype, image.shape) != g.key:
            new = _Geometry(image.dtype, image.shape)
            why = f"geometry {g.key[0]} {g.key[1]} -> {image.dtype} {image.shape}"
            self._replace(new.nbytes, new.tail, why)
            self._geometry = g = new
        m = self._map
        n, slot = self.begin()
        np.copyto(m.views[slot], image, casting="no")
        layout.SLOT_META.pack_into(
            m.slot_bufs[slot],
            layout.OFF_SLOT_META,
            pulse_id,
            timestamp[0],
            timestamp[1],
            time.monotonic_ns(),
            g.nbytes,
            g.dtype_code,
            *g.shape_fields,
            *(axes or layout.NO_AXES),
        )
        self.commit(n, slot)
        return n


class RingReader(Reader):
    """A reader of a frame ring, attached by base name; see slotring.Reader for the policies."""

    MAPPING = _FrameMapping

    @property
    def dtype(self) -> np.dtype:
        return self._map.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self._map.shape

    def _read(self, m: _FrameMapping, n: int) -> Frame | None:
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
