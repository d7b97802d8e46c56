"""The HDF5 files of FILE mode pipelines: records of named channel values, in one of the
layouts of docs/files.md.

- CamServer's layouts (`CamServerFile`, §10.3 of docs/spec/camserver.md): `DEFAULT`
  (`/data/<ch>/value`, `/data/<ch>/timestamp`, `/header/pulse_id`, `/header/global_timestamp`),
  `FLAT` (`/data/<ch>`, `/data/<ch>_timestamp`) and `BSH5` (`/<ch>/data`, `/<ch>/timestamp`,
  `/pulse_id`, `/global_timestamp`); `/general/...` datasets describe the run. Every dataset
  has one row per record; a shape change with `change` opens `data1`/`header1`, and so on.
- shmcam's own layout (`StoreFile`): one group per channel with its data and, per row, the
  pulse id, timestamp and whether a value was present, from the record that first had one.

Images (values of two or more dimensions) are chunked one frame per chunk and each chunk is
written with `write_direct_chunk`: raw bytes, or the bitshuffle LZ4 filter's chunk format
(a bsread `bitshuffle_lz4` part, `Compressed`, is such a chunk already; an array is compressed
into it here). All other rows are buffered and appended at `flush()`, so a record costs one
HDF5 call per image, not one per dataset. A record is checked (and compressed) whole
(`prepare`) before anything is written (`write`), so a record that does not fit leaves no
trace. Knows nothing of rings or sockets: it is given values.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import hdf5plugin
import numpy as np

from shmcam.bsread import Compressed
from shmcam.bsread.compression import BITSHUFFLE_LZ4, NONE, compress

SHMCAM_LAYOUT = "shmcam-store/1"
#: bitshuffle (HDF5 filter 32008) with LZ4; readers `import hdf5plugin`.
BITSHUFFLE = hdf5plugin.Bitshuffle(cname="lz4")
ROW_CHUNK = 1024
ROW_CHUNK_BYTES = 64 << 10
CAMSERVER_STRING = np.dtype("S1000")  # CamServer's writer stores strings so
_VLEN_STRING = h5py.string_dtype()
#: CamServer's layouts: (value, timestamp) dataset paths of channel c in data group d, and the
#: header group h's datasets; the group names carry the index of the data format.
PATHS = {
    "DEFAULT": ("{d}/{c}/value", "{d}/{c}/timestamp", "{h}/"),
    "FLAT": ("{d}/{c}", "{d}/{c}_timestamp", "{h}/"),
    "BSH5": ("{c}/data", "{c}/timestamp", ""),
}


class LayoutChange(ValueError):
    """A value that does not fit its channel's dataset: the channel changed type or shape."""


class WriteError(OSError):
    """The file cannot be written (disk full, file system gone): the run cannot go on."""


class _Spec(NamedTuple):
    """What a channel's value dataset holds per row."""

    kind: str  # "image" (a chunk per row), "array" (numbers) or "string"
    dtype: np.dtype | None  # None for strings
    shape: tuple[int, ...]  # of one row, numpy order

    def describe(self) -> str:
        if self.kind == "string":
            return "strings"
        return f"{self.dtype} of shape {self.shape}"

    def takes(self, other: _Spec) -> bool:
        """Whether a value of `other` fits: images exactly (their chunk bytes are stored as
        they are), numbers if their shape is the same and their type casts losslessly."""
        if self.kind != other.kind:
            return False
        if self.kind == "array":
            return self.shape == other.shape and np.can_cast(other.dtype, self.dtype, "safe")
        return self == other


class Record(NamedTuple):
    """One prepared record: the payload per channel (a chunk, an array or a str)."""

    pulse_id: int
    timestamp: tuple[int, int]
    payloads: dict[str, tuple[_Spec, Any]]
    timestamps: Mapping[str, tuple[int, int] | None]
    new_format: bool = False  # CamServer's layouts with `change`: opens the next groups


def group_name(channel: str) -> str:
    """A channel's name in the file: '/' would nest groups and '.' names the parent."""
    name = channel.replace("%", "%25").replace("/", "%2F")
    return "%2E" if name == "." else name or "%00"


def _describe(value: Any) -> tuple[_Spec | None, Any]:
    """(spec, payload) of a value, or (None, None) when it carries no data."""
    if value is None:
        return None, None
    if isinstance(value, Compressed):
        if value.codec != BITSHUFFLE_LZ4:
            raise TypeError(f"a {value.codec} part is not an HDF5 chunk; decode it first")
        return _Spec("image", value.dtype, value.shape), value
    if isinstance(value, str):
        return _Spec("string", None, ()), value
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"cannot store a value of dtype {array.dtype}")
    if not array.size:
        return None, None
    return _Spec("image" if array.ndim >= 2 else "array", array.dtype, array.shape), array


def _prepare(
    specs: Mapping[str, _Spec], values: Mapping[str, Any], compressed: bool
) -> tuple[dict[str, tuple[_Spec, Any]], list[str]]:
    """The payloads of a record's values, and the channels whose spec does not fit theirs."""
    payloads, misfits = {}, []
    for name, value in values.items():
        spec, payload = _describe(value)
        if spec is None:
            continue
        known = specs.get(name)
        if known is not None and not known.takes(spec):
            misfits.append(f"channel {name!r} changed from {known.describe()} to {spec.describe()}")
        if spec.kind == "image" and not isinstance(payload, Compressed):
            payload = compress(
                np.ascontiguousarray(payload), BITSHUFFLE_LZ4 if compressed else NONE
            )
        elif spec.kind == "array":
            payload = payload.copy()  # kept until flush(); its source may be reused
        payloads[name] = (spec, payload)
    return payloads, misfits


# --- columns: one dataset each, appended a row per record -----------------------------------


class ImageColumn:
    """Images, one chunk per row, each written at once with write_direct_chunk (raw, or the
    bitshuffle filter's format). A row without an image leaves its chunk unwritten: zeros."""

    def __init__(
        self, parent: h5py.Group, name: str, spec: _Spec, rows: int, compressed: bool, limit=None
    ):
        self.rows = rows
        self.shape = spec.shape
        self.compressed = compressed
        self.dataset = parent.create_dataset(
            name,
            (rows, *spec.shape),
            spec.dtype,
            maxshape=(limit, *spec.shape),
            chunks=(1, *spec.shape),
            **(BITSHUFFLE if compressed else {}),
        )

    def add(self, payload) -> int:
        """One row; the bytes written to the file now."""
        row = self.rows
        self.rows += 1
        if payload is None:
            return 0
        chunk = payload.data if isinstance(payload, Compressed) else payload
        self.dataset.resize(self.rows, axis=0)
        self.dataset.id.write_direct_chunk((row, *(0,) * len(self.shape)), chunk)
        return len(chunk)

    def flush(self) -> None:
        if self.dataset.shape[0] < self.rows:  # rows without data are left unallocated
            self.dataset.resize(self.rows, axis=0)


class RowColumn:
    """Numbers or strings, buffered and appended as a block at flush(); None rows are zeros
    (empty strings)."""

    def __init__(self, parent: h5py.Group, name: str, dtype, shape=(), rows=0, limit=None):
        dtype = np.dtype(dtype)
        self.dtype, self.shape = dtype, tuple(shape)
        self.stored = self.rows = rows
        self.pending: list[Any] = []
        row_bytes = max(1, int(np.prod(shape)) * dtype.itemsize)
        chunk = max(1, min(ROW_CHUNK, ROW_CHUNK_BYTES // row_bytes, limit or ROW_CHUNK))
        self.dataset = parent.create_dataset(
            name, (rows, *shape), dtype, maxshape=(limit, *shape), chunks=(chunk, *shape)
        )

    def add(self, value) -> int:
        self.rows += 1
        self.pending.append(value)
        return 0

    def flush(self) -> None:
        start, end = self.stored, self.rows
        if start == end:
            return
        self.dataset.resize(end, axis=0)
        if self.dtype.kind == "O":
            block = np.array([v or "" for v in self.pending], dtype=object)
        elif self.dtype.kind == "S":
            block = np.array(
                [(v or "").encode()[: self.dtype.itemsize] for v in self.pending], self.dtype
            )
        else:
            block = np.zeros((end - start, *self.shape), self.dtype)
            for index, value in enumerate(self.pending):
                if value is not None:
                    block[index] = value
        self.dataset[start:end] = block
        self.pending.clear()
        self.stored = end


def _column(parent, name, spec: _Spec, rows: int, compressed: bool, string_dtype, limit=None):
    if spec.kind == "image":
        return ImageColumn(parent, name, spec, rows, compressed, limit)
    if spec.kind == "string":
        return RowColumn(parent, name, string_dtype, (), rows, limit)
    return RowColumn(parent, name, spec.dtype, spec.shape, rows, limit)


# --- files -------------------------------------------------------------------------------------


class _File:
    """A run's file: opened new (never over an existing one), flushed, closed once. A failed
    write breaks it: HDF5 may crash the process if asked to write again."""

    def __init__(self, path: Path):
        if path.exists():
            raise FileExistsError(f"{path} exists: a pipeline never overwrites a file")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.records = 0
        self.bytes_written = 0  # image chunk bytes
        self._broken = False
        # The default (earliest) format on purpose: newer superblocks mark a file open for
        # writing, and then nothing opens it during the run or after a crash without h5clear.
        self._file = h5py.File(path, "w-")

    def columns(self) -> Iterator:
        raise NotImplementedError

    def write(self, record: Record) -> None:
        """Append a prepared record."""
        with self._writing():
            self._write(record)
            self.records += 1

    def flush(self) -> None:
        """Append the buffered rows and flush the file: a reader now sees every record."""
        with self._writing():
            for column in self.columns():
                column.flush()
            self._file.flush()

    def close(self, end_reason: str) -> None:
        """Flush, note how the run ended and how many records it has, and close."""
        if not self._file:
            return
        if self._broken:  # asked to write more after a failed write, HDF5 may crash
            with suppress(OSError, RuntimeError):
                self._file.close()
            return
        with self._writing():
            try:
                self.flush()
                self._finish(end_reason)
            finally:
                self._file.close()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """HDF5 reports a failed write as OSError or RuntimeError, depending on where it
        surfaces, with its whole error stack in the text: one WriteError with the gist."""
        try:
            yield
        except (OSError, RuntimeError) as error:
            self._broken = True
            text = str(error)
            cause = re.search(r"error message = '([^']*)'", text)
            gist = text.split(" (", 1)[0]
            raise WriteError(f"{gist}: {cause.group(1)}" if cause else gist) from error


class StoreFile(_File):
    """shmcam's layout (`SHMCAM`): `general` becomes attributes of `/general`; each channel a
    group `/data/<channel>` with `data`, `pulse_id`, `timestamp`, `timestamp_offset` and
    `is_data_present`, one row per record from the first record that had a value for it."""

    META = {
        "pulse_id": np.int64,
        "timestamp": np.int64,
        "timestamp_offset": np.int64,
        "is_data_present": np.uint8,
    }

    def __init__(self, path: Path, general: Mapping[str, Any]):
        super().__init__(path)
        self._channels: dict[str, tuple[_Spec, dict, Any]] = {}  # spec, meta, data
        try:
            self._general = self._file.create_group("general")
            self._general.attrs.update({"layout": SHMCAM_LAYOUT, **general})
            self._data = self._file.create_group("data")
        except Exception:
            self._file.close()
            raise

    def prepare(
        self,
        pulse_id: int,
        timestamp: tuple[int, int],
        values: Mapping[str, Any],
        timestamps: Mapping[str, tuple[int, int] | None] | None = None,
    ) -> Record:
        """Check and compress one record's values; LayoutChange if one does not fit its channel.

        Values: numbers, str, numpy arrays (read here, not later), `Compressed` bitshuffle_lz4
        parts, or None (no data). `timestamps` gives channels their own (sec, ns); the others
        get the record's `timestamp`.
        """
        specs = {name: channel[0] for name, channel in self._channels.items()}
        payloads, misfits = _prepare(specs, values, compressed=True)
        if misfits:
            raise LayoutChange(misfits[0])
        return Record(pulse_id, timestamp, payloads, timestamps or {})

    def _write(self, record: Record) -> None:
        for name, (spec, _) in record.payloads.items():
            if name not in self._channels:
                group = self._data.create_group(group_name(name))
                meta = {key: RowColumn(group, key, dtype) for key, dtype in self.META.items()}
                data = _column(group, "data", spec, 0, True, _VLEN_STRING)
                self._channels[name] = (spec, meta, data)
        for name, (_, meta, data) in self._channels.items():
            payload = record.payloads.get(name)
            sec, ns = record.timestamps.get(name) or record.timestamp
            for key, value in zip(meta, (record.pulse_id, sec, ns, payload is not None)):
                meta[key].add(value)
            self.bytes_written += data.add(None if payload is None else payload[1])

    def columns(self) -> Iterator:
        for _, meta, data in self._channels.values():
            yield from meta.values()
            yield data

    def _finish(self, end_reason: str) -> None:
        self._general.attrs.update({"records": self.records, "end_reason": end_reason})


class CamServerFile(_File):
    """CamServer's layouts. Every dataset has a row per record (a channel without a value in
    a record, or first seen later, has zeros there). A value that no longer fits its dataset
    raises LayoutChange, unless `change`: then the record opens the next data and header
    groups (`data1`, `header1`, ...). `general`: more `/general` datasets besides CamServer's
    created, user, pid and host."""

    def __init__(
        self,
        path: Path,
        layout: str,
        general: Mapping[str, Any],
        localtime: bool = True,
        change: bool = False,
        records: int | None = None,
        compressed: bool = False,
    ):
        super().__init__(path)
        self.value_path, self.time_path, self.header_path = PATHS[layout]
        self.localtime, self.change, self.compressed = localtime, change, compressed
        self.max_rows = records
        self.groups = 0  # data formats so far
        self._channels: dict[str, tuple[_Spec, Any, Any]] = {}  # spec, value, timestamp
        self._header: tuple[RowColumn, RowColumn] | None = None
        self._done: list = []  # columns of earlier data formats, flushed already
        try:
            self._general = self._file.create_group("general")
            for key, value in {
                "created": datetime.now().strftime("%d/%m/%Y %H:%M:%S.%f"),
                "user": getpass.getuser(),
                "pid": os.getpid(),
                "host": socket.gethostname(),
                **general,
            }.items():
                self._general.create_dataset(key, data=value)
        except Exception:
            self._file.close()
            raise

    def prepare(self, pulse_id: int, timestamp: tuple[int, int], values: Mapping) -> Record:
        """Check (and copy or compress) one record's values; LayoutChange if one does not fit
        its dataset and the file does not `change`. Images are read when written."""
        specs = {name: channel[0] for name, channel in self._channels.items()}
        payloads, misfits = _prepare(specs, values, self.compressed)
        if misfits and not self.change:
            raise LayoutChange(f"Data format changed: {misfits[0]}")
        return Record(pulse_id, timestamp, payloads, {}, bool(misfits))

    def _write(self, record: Record) -> None:
        if self._header is None or record.new_format:
            self._new_format()
        rows = self._header[0].rows
        for name, (spec, _) in record.payloads.items():
            if name not in self._channels:
                self._channels[name] = self._new_channel(name, spec, rows)
        self._header[0].add(record.pulse_id)
        self._header[1].add(record.timestamp)
        for name, (_, value, stamp) in self._channels.items():
            payload = record.payloads.get(name)
            self.bytes_written += value.add(None if payload is None else payload[1])
            if stamp is not None:
                stamp.add(None if payload is None else record.timestamp)

    def _new_format(self) -> None:
        """The data and header groups of the next data format (the first: data, header)."""
        if self._header is not None:
            for column in self.columns():
                column.flush()
            self._done += list(self.columns())
        suffix = str(self.groups) if self.groups else ""
        self.groups += 1
        self._group = {"d": f"data{suffix}", "h": f"header{suffix}"}
        header = self.header_path.format(**self._group)
        self._channels = {}
        self._header = (
            self._dataset(f"{header}pulse_id", np.uint64),
            self._dataset(f"{header}global_timestamp", np.uint64, (2,)),
        )

    def _new_channel(self, name: str, spec: _Spec, rows: int):
        names = {**self._group, "c": group_name(name)}
        path = self.value_path.format(**names)
        parent, _, leaf = path.rpartition("/")
        group = self._file.require_group(parent) if parent else self._file
        value = _column(group, leaf, spec, rows, self.compressed, CAMSERVER_STRING, self.max_rows)
        stamp = None
        if self.localtime:
            stamp = self._dataset(self.time_path.format(**names), np.uint64, (2,), rows)
        return spec, value, stamp

    def _dataset(self, path: str, dtype, shape=(), rows: int = 0) -> RowColumn:
        parent, _, leaf = path.rpartition("/")
        group = self._file.require_group(parent) if parent else self._file
        return RowColumn(group, leaf, dtype, shape, rows, self.max_rows)

    def columns(self) -> Iterator:
        if self._header is not None:
            yield from self._header
        for _, value, stamp in self._channels.values():
            yield value
            if stamp is not None:
                yield stamp

    def _finish(self, end_reason: str) -> None:
        for key, value in {
            "records": self.records,
            "end_reason": end_reason,
            "datasets": self.groups,
        }.items():
            self._general.create_dataset(key, data=value)
