"""Record rings: results (pulse id, timestamp, named channels) in shared memory, zero-copy.

The frame ring's discipline (slotring.py: one writer that never waits, seqlock per slot,
drop-oldest, futex wake-ups, generations) for whole records: a pipeline's output is read in
place by local cascades, the publisher of its bsread stream, and programs in any language
(include/shmcam/records.h; layout in docs/ring.md).

A slot holds a channel table (name, type, shape, offset of each channel) and the payloads.
Writing the same channel set again reuses the table made for it: per record the writer copies
the values and little else. A record larger than a slot opens a new generation with larger
slots, which readers follow, as a frame of another geometry does for frames.

Channel values are the bsread types: bool, int8..uint64, float32, float64 as scalars or arrays
of 1 to 3 dimensions, str, and None (a channel without a value, as bsread sends it).
"""

from __future__ import annotations

import logging
import math
import struct
import time
from collections.abc import Callable
from collections.abc import Mapping as MappingType
from typing import Any

import numpy as np

from . import layout, segment
from .slotring import DEFAULT_SLOTS, Mapping, Reader, Writer, generation_name, generations

__all__ = [
    "DEFAULT_CAPACITY",
    "Record",
    "RecordReader",
    "RecordWriter",
    "create_record_ring",
    "type_name",
]

DEFAULT_CAPACITY = 1 << 18  # bytes of table and payloads per slot until a record needs more
MAX_FORMATS = 16  # channel sets kept prepared; beyond, they are prepared again when they recur
log = logging.getLogger(__name__)

_SLOT0 = layout.RECORD_SLOT_HEADER_SIZE
_ENTRY = layout.RECORD_ENTRY
_INT64 = (-(2**63), 2**63)
_U64 = struct.Struct("<Q")

# numpy (kind, itemsize) -> type code, and code -> little-endian storage dtype.
_DTYPES = [None if code is None else np.dtype("<" + code) for _, code in layout.RECORD_TYPES]
_CODES = {
    (dtype.kind, dtype.itemsize): code
    for code, dtype in enumerate(_DTYPES)
    if dtype is not None and code != layout.TYPE_STRING
}
_PYTHON = {bool: np.dtype("?"), int: np.dtype("<i8"), float: np.dtype("<f8")}


def type_name(code: int) -> str:
    """The bsread name of a record channel type code ('float64', 'string', 'null')."""
    return layout.RECORD_TYPES[code][0]


def _align(n: int, to: int = layout.ALIGN) -> int:
    return (n + to - 1) // to * to


class _Channel:
    """One channel of a format: how it is stored, and what values fit it unchanged."""

    __slots__ = ("name", "code", "shape", "nbytes", "offset", "python_type", "dtype", "pack")

    def __init__(self, name, code, shape, python_type, dtype):
        self.name = name
        self.code = code
        self.shape = shape
        self.python_type = python_type  # type(value) for which the fast path applies
        self.dtype = dtype  # the value's dtype (arrays): another byte order is another format
        self.nbytes = 0
        self.pack = None  # a scalar's writer: struct is ~5x faster than numpy for one value
        if self.fixed:
            self.nbytes = math.prod(shape) * _DTYPES[code].itemsize
            if not shape:
                self.pack = struct.Struct(_DTYPES[code].char).pack_into  # native: x86-64 only
        self.offset = 0  # of the payload, from the slot's start (strings: per record)

    @property
    def fixed(self) -> bool:
        return self.code not in (layout.TYPE_NULL, layout.TYPE_STRING)


def _classify(name: Any, value: Any) -> tuple[_Channel, Any]:
    """The channel a value needs, and the value to copy (converted only where it must be)."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise TypeError(f"record channel names are non-empty strings without NUL, not {name!r}")
    kind = type(value)
    if value is None:
        return _Channel(name, layout.TYPE_NULL, (), kind, None), None
    if isinstance(value, str):  # numpy's str_ too
        return _Channel(name, layout.TYPE_STRING, (), kind, None), value
    if kind in _PYTHON:
        if kind is int and not _INT64[0] <= value < _INT64[1]:
            raise ValueError(f"channel {name!r}: {value} does not fit an int64")
        dtype = _PYTHON[kind]
        return _Channel(name, _CODES[dtype.kind, dtype.itemsize], (), kind, None), value
    if isinstance(value, (list, tuple)):
        value = np.asarray(value)
        kind = None  # a list is converted every time: never the fast path
    if not isinstance(value, (np.ndarray, np.generic)):
        raise TypeError(
            f"channel {name!r}: a {type(value).__name__} cannot be stored in a record "
            "(use a number, a str, None or a numpy array)"
        )
    code = _CODES.get((value.dtype.kind, value.dtype.itemsize))
    if code is None:
        raise TypeError(
            f"channel {name!r}: dtype {value.dtype} is not a bsread type "
            "(bool, int8..uint64, float32, float64)"
        )
    if value.ndim > layout.RECORD_MAX_NDIM or any(n >= 2**32 for n in value.shape):
        raise ValueError(
            f"channel {name!r}: shape {value.shape} has more than "
            f"{layout.RECORD_MAX_NDIM} dimensions or a dimension of 2**32 or more"
        )
    return _Channel(name, code, value.shape, kind, value.dtype), value


class _Format:
    """A channel set as it lies in a slot, with per-slot views of its fixed payloads."""

    def __init__(self, ident: int, channels: list[_Channel]):
        self.ident = ident
        self.channels = channels
        self.strings = [i for i, c in enumerate(channels) if c.code == layout.TYPE_STRING]
        self.views: list[list | None] | None = None  # per slot, per channel, once mapped

    def bind(self, m: _RecordMapping) -> None:
        """Make the per-slot views of the fixed payloads in a mapping (lazily, per slot)."""
        self.views = [None] * m.slots

    def slot_views(self, m: _RecordMapping, slot: int) -> list:
        views = self.views[slot]
        if views is None:
            start = m.slot_start(slot)
            views = self.views[slot] = [
                np.frombuffer(m.mm, _DTYPES[c.code], math.prod(c.shape), start + c.offset).reshape(
                    c.shape
                )
                if c.fixed
                else None
                for c in self.channels
            ]
        return views


class _WriteFormat(_Format):
    """A format as the Python writer lays it out: slot header, table (entries, then names),
    fixed payloads, then the strings. Made once per channel set, reused while it repeats."""

    def __init__(self, ident: int, channels: list[_Channel]):
        super().__init__(ident, channels)
        entries = _ENTRY.size * len(channels)
        names = [c.name.encode() + b"\0" for c in channels]
        self.table_nbytes = entries + sum(map(len, names))
        offset = _align(_SLOT0 + self.table_nbytes)
        for c in channels:
            if c.fixed:
                c.offset = offset
                offset = _align(offset + c.nbytes)
        self.fixed_end = offset
        table = bytearray(self.table_nbytes)
        name_at = _SLOT0 + entries
        for i, (c, raw) in enumerate(zip(channels, names)):
            _ENTRY.pack_into(
                table,
                i * _ENTRY.size,
                c.offset,
                c.nbytes,
                *(c.shape + (0,) * (layout.RECORD_MAX_NDIM - len(c.shape))),
                c.code,
                len(c.shape),
                name_at,
                len(raw) - 1,
            )
            table[name_at - _SLOT0 : name_at - _SLOT0 + len(raw)] = raw
            name_at += len(raw)
        self.table = bytes(table)
        # What the writer's fast path compares a record with (see RecordWriter._format).
        self.names = tuple(c.name for c in channels)
        self.types = tuple(c.python_type for c in channels)
        self.arrays = [i for i, c in enumerate(channels) if c.python_type is np.ndarray]
        self.ints = [i for i, c in enumerate(channels) if c.python_type is int]


class _RecordMapping(Mapping):
    """A mapped record ring generation, with the readers' parsed tables by format."""

    KIND = "shmcam record ring"
    MAGIC = layout.RECORDS_MAGIC
    VERSION = layout.RECORDS_VERSION
    SLOT_HEADER_SIZE = _SLOT0

    def __init__(self, name, mm, inode=None):
        super().__init__(name, mm, inode)
        self.formats: dict[int, _Format] = {}  # parsed tables, by format
        self._slot_arrays: list[np.ndarray | None] = [None] * self.slots

    def slot_start(self, slot: int) -> int:
        return self.HEADER_SIZE + slot * self.stride

    def slot_array(self, slot: int) -> np.ndarray:
        """A slot's bytes as one array, made once: what a record's views point into."""
        array = self._slot_arrays[slot]
        if array is None:
            array = self._slot_arrays[slot] = np.frombuffer(
                self.mm, np.uint8, self.stride, self.slot_start(slot)
            )
        return array

    def release_views(self) -> None:
        self.formats = {}
        self._slot_arrays = [None] * self.slots


def _tail() -> bytes:
    return bytes(layout.HEADER_SIZE - layout.COMMON_HEADER.size)


def create_record_ring(
    base: str, slots: int = DEFAULT_SLOTS, capacity: int = DEFAULT_CAPACITY
) -> str:
    """Create an empty record ring for another process to write (the supervisor does, for an
    external program's SHMCAM_OUTPUT_RING): its readers can attach before the writer starts,
    and the writer takes its slot count and capacity from it. Returns the segment's name.

    The caller owns the ring: remove it with remove_ring(base) when done.
    """
    writer = RecordWriter(base, slots, capacity)
    name = writer.name
    writer._map.close()  # stays live, writer-less: the first record comes from its writer
    writer._map = None
    return name


class RecordWriter(Writer):
    """The one writer of a record ring. `write()` copies a record into the next slot.

    `slots` and `capacity` (bytes of table and payloads per slot) default to those of a ring
    already there under `base` (the one the supervisor created, or a predecessor's), else to
    DEFAULT_SLOTS and DEFAULT_CAPACITY. Slots grow when a record does not fit.
    """

    MAPPING = _RecordMapping

    def __init__(self, base: str, slots: int | None = None, capacity: int | None = None):
        found_slots, found_capacity = _existing_geometry(base)
        slots = slots or found_slots or DEFAULT_SLOTS
        capacity = max(capacity or 0, found_capacity or 0) or DEFAULT_CAPACITY
        super().__init__(base, slots)
        self._formats: dict[tuple, _WriteFormat] = {}
        self._last: _WriteFormat | None = None
        self._formats_made = 0
        self._meta = bytearray(layout.RECORD_META.size)
        self._encoded: list[bytes] = []
        self._start(capacity, _tail())
        self._slot_format = [0] * slots

    @property
    def records_written(self) -> int:
        return self.items_written

    @property
    def capacity(self) -> int:
        return self._map.capacity

    def write(
        self,
        pulse_id: int,
        timestamp: tuple[int, int],
        channels: MappingType[str, Any],
        intact: Callable[[], bool] | None = None,
    ) -> int | None:
        """Copy a record into the next slot and publish it; returns the record number.

        `channels` maps names to values, in the order readers will see them. Never blocks on
        readers. Nothing is written if a value cannot be stored (TypeError or ValueError).
        `intact`, if given, is asked after the copy whether the values were still valid
        throughout (views of a frame the camera may have overwritten meanwhile): if not,
        nothing is published, the slot is left to the next record, and write returns None.
        """
        fmt, values = self._format(channels)
        size = fmt.fixed_end
        if fmt.strings:
            encoded = self._encoded
            encoded.clear()
            for c, value in zip(fmt.channels, values):
                if c.code == layout.TYPE_STRING:
                    raw = value.encode()
                    encoded.append(raw)
                    size += _align(len(raw) + 1)
        try:  # before touching the slot
            layout.RECORD_META.pack_into(
                self._meta,
                0,
                pulse_id,
                timestamp[0],
                timestamp[1],
                0,
                fmt.ident,
                _SLOT0,
                len(fmt.channels),
                fmt.table_nbytes,
            )
        except (struct.error, TypeError, IndexError):
            raise ValueError(
                f"a record's pulse id and timestamp (sec, ns) are int64 integers, "
                f"not {pulse_id!r} and {timestamp!r}"
            ) from None
        if size > self._map.stride:
            self._grow(size)
        m = self._map
        if fmt.views is None:
            fmt.bind(m)
        n, slot = self.begin()
        buf = m.slot_bufs[slot]
        if self._slot_format[slot] != fmt.ident:
            buf[_SLOT0 : _SLOT0 + fmt.table_nbytes] = fmt.table
            self._slot_format[slot] = fmt.ident
        for c, view, value in zip(fmt.channels, fmt.slot_views(m, slot), values):
            if c.pack is not None:
                c.pack(buf, c.offset, value)
            elif view is not None:
                np.copyto(view, value)
        if fmt.strings:
            offset = fmt.fixed_end
            for i, raw in zip(fmt.strings, self._encoded):
                buf[offset : offset + len(raw)] = raw
                buf[offset + len(raw)] = 0
                layout.RECORD_SPAN.pack_into(buf, _SLOT0 + i * _ENTRY.size, offset, len(raw))
                offset += _align(len(raw) + 1)
        _U64.pack_into(self._meta, 24, time.monotonic_ns())  # publish_ns
        buf[layout.OFF_RECORD_META : _SLOT0] = self._meta
        if intact is not None and not intact():
            return None
        self.commit(n, slot)
        return n

    def _format(self, channels: MappingType[str, Any]) -> tuple[_WriteFormat, Any]:
        """The format of a record, and the values to copy: the last format if the channels
        repeat it (names, types, shapes), else one made (or found) for them."""
        if not isinstance(channels, MappingType):
            raise TypeError(
                f"a record's channels are a mapping of names to values, not {channels!r}"
            )
        fmt = self._last
        if fmt is not None:
            values = list(channels.values())
            if tuple(channels) == fmt.names and tuple(map(type, values)) == fmt.types:
                for i in fmt.arrays:
                    c, value = fmt.channels[i], values[i]
                    if value.shape != c.shape or value.dtype != c.dtype:
                        break
                else:
                    for i in fmt.ints:
                        if not _INT64[0] <= values[i] < _INT64[1]:
                            break
                    else:
                        return fmt, values
        described = [_classify(name, value) for name, value in channels.items()]
        key = tuple((c.name, c.code, c.shape, c.python_type, c.dtype) for c, _ in described)
        fmt = self._formats.get(key)
        if fmt is None:
            if len(self._formats) >= MAX_FORMATS:
                self._formats.clear()
            self._formats_made += 1
            fmt = self._formats[key] = _WriteFormat(self._formats_made, [c for c, _ in described])
        self._last = fmt
        return fmt, [value for _, value in described]

    def _grow(self, size: int) -> None:
        """Continue in a generation whose slots hold `size` bytes, with room to spare."""
        old = self._map.capacity
        capacity = max(size - _SLOT0 + size // 4, 2 * old)
        self._replace(capacity, _tail(), f"a record of {size} bytes outgrew slots of {old}")
        for fmt in self._formats.values():
            fmt.views = None
        self._slot_format = [0] * self.slots


def _existing_geometry(base: str) -> tuple[int | None, int | None]:
    """Slot count and capacity of the newest generation already there, if any."""
    gens = generations(base)
    if not gens:
        return None, None
    name = generation_name(base, gens[-1])
    try:
        mm, _ = segment.attach(name)
    except FileNotFoundError:
        return None, None
    try:
        m = _RecordMapping(name, mm)
    except segment.ShmError:  # not a record ring: nothing to take over
        mm.close()
        return None, None
    m.close()
    return m.slots, m.capacity


class Record:
    """One record as a reader sees it.

    `data` maps channel names to values in the writer's order: arrays are read-only views into
    the slot (check `RecordReader.validate` after use, as for frames); scalars (numpy scalars),
    strings and None are read when the record is taken, under the seqlock.
    """

    __slots__ = ("index", "pulse_id", "timestamp", "published_ns", "data", "_map", "_slot")

    def __init__(self, index, pulse_id, timestamp, published_ns, data, mapping, slot):
        self.index = index
        self.pulse_id = pulse_id
        self.timestamp = timestamp  # (sec, ns)
        self.published_ns = published_ns  # CLOCK_MONOTONIC when the writer completed it
        self.data = data
        self._map = mapping
        self._slot = slot

    @property
    def image(self):
        """The `image` channel, if the record has one (as a pipeline's frame would)."""
        return self.data.get("image")

    @property
    def memory(self) -> np.ndarray:
        """The record's slot as bytes: an array that may share memory with it is (or derives
        from) a view into the ring, to be copied before it is kept past `validate`."""
        return self._map.slot_array(self._slot)

    def __repr__(self):
        return f"Record(index={self.index}, pulse_id={self.pulse_id}, channels={list(self.data)})"


class BadRecord(segment.ShmError):
    """A record whose table does not describe a valid record (a broken writer)."""


def _parse_table(m: _RecordMapping, buf, ident, table_offset, count, table_nbytes) -> _Format:
    """The channels a slot's table describes, every offset checked against the slot."""
    stride = m.stride
    end = table_offset + table_nbytes
    if table_offset % layout.RECORD_TABLE_ALIGN or end > stride or table_offset < _SLOT0:
        raise BadRecord(f"table at {table_offset}+{table_nbytes} outside a slot of {stride}")
    if count * _ENTRY.size > table_nbytes:
        raise BadRecord(f"{count} channels do not fit a table of {table_nbytes} bytes")
    channels = []
    for i in range(count):
        offset, nbytes, *dims, code, ndim, name_at, name_len = _ENTRY.unpack_from(
            buf, table_offset + i * _ENTRY.size
        )
        if code >= len(layout.RECORD_TYPES) or ndim > layout.RECORD_MAX_NDIM:
            raise BadRecord(f"channel {i}: type {code}, ndim {ndim}")
        if not table_offset <= name_at < name_at + name_len < end or buf[name_at + name_len]:
            raise BadRecord(f"channel {i}: name outside the table or not NUL-terminated")
        try:
            name = str(buf[name_at : name_at + name_len], "utf-8")
        except UnicodeDecodeError:
            raise BadRecord(f"channel {i}: name is not UTF-8") from None
        shape = tuple(dims[:ndim])
        c = _Channel(name, code, shape, None, None)
        if c.fixed:
            if nbytes != c.nbytes or offset % layout.ALIGN or offset + nbytes > stride:
                raise BadRecord(f"channel {name!r}: {nbytes} bytes at {offset}, shape {shape}")
            c.offset = offset
        elif ndim:
            raise BadRecord(f"channel {name!r}: a {type_name(code)} has no shape")
        channels.append(c)
    if len({c.name for c in channels}) != count:
        raise BadRecord("two channels of one name")
    return _Format(ident, channels)


class RecordReader(Reader):
    """A reader of a record ring, attached by base name; see slotring.Reader for the policies.

    `invalid` counts records whose table was broken (a faulty writer): they are skipped, and
    counted as missed too.
    """

    MAPPING = _RecordMapping

    def __init__(self, base: str, policy: str = "sequential", timeout: float = 0.0):
        self.invalid = 0
        super().__init__(base, policy, timeout)

    def _read(self, m: _RecordMapping, n: int) -> Record | None:
        """Record n if its slot holds it complete (seqlock read of all but the arrays)."""
        slot = n % m.slots
        seq = m.slot_q[slot]
        if seq[0] != 2 * n + 2:
            return None
        buf = m.slot_bufs[slot]
        pulse_id, sec, ns, published, ident, table_offset, count, table_nbytes = (
            layout.RECORD_META.unpack_from(buf, layout.OFF_RECORD_META)
        )
        fmt = m.formats.get(ident) if ident else None
        try:
            if fmt is None:
                fmt = _parse_table(m, buf, ident, table_offset, count, table_nbytes)
                fmt.bind(m)
            data = _values(m, buf, slot, fmt, table_offset)
        except BadRecord as error:
            if seq[0] == 2 * n + 2:  # intact, so the writer's fault, not a torn read
                self.invalid += 1
                if self.invalid == 1:
                    log.warning("%s: record %d skipped: %s", self.base, n, error)
            return None
        if seq[0] != 2 * n + 2:
            return None
        if ident and ident not in m.formats:  # parsed from an intact slot: keep it
            if len(m.formats) >= MAX_FORMATS:
                m.formats.clear()
            m.formats[ident] = fmt
        return Record(n, pulse_id, (sec, ns), published, data, m, slot)


def _values(m: _RecordMapping, buf, slot: int, fmt: _Format, table_offset: int) -> dict:
    """A record's values: views of the arrays, the scalars, strings and None read now."""
    data = {}
    views = fmt.slot_views(m, slot)
    for i, (c, view) in enumerate(zip(fmt.channels, views)):
        if view is not None:
            data[c.name] = view[()] if not c.shape else view
        elif c.code == layout.TYPE_STRING:
            offset, nbytes = layout.RECORD_SPAN.unpack_from(buf, table_offset + i * _ENTRY.size)
            if offset % layout.ALIGN or offset + nbytes >= m.stride:
                raise BadRecord(f"channel {c.name!r}: string of {nbytes} bytes at {offset}")
            data[c.name] = str(buf[offset : offset + nbytes], "utf-8", "replace")
        else:
            data[c.name] = None
    return data
