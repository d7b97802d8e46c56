"""The store's HDF5 file: records of named channel values, laid out as bsread tools write them.

Layout (docs/store.md): `/general` holds the run's metadata as attributes; each channel has a
group `/data/<channel>` with `data`, `pulse_id`, `timestamp`, `timestamp_offset` and
`is_data_present`, one row per record from the first record that had a value for it.
Images (values of two or more dimensions) are chunked one frame per chunk with the bitshuffle
LZ4 filter, and each chunk is written with `write_direct_chunk`: a bsread `bitshuffle_lz4`
part (`Compressed`) is such a chunk already, and an array is compressed here into the same
format (the HDF5 filter path would compress the same way, through more copies). All other rows
are buffered and appended at `flush()`, so a record costs one HDF5 call per image, not one per
dataset. A record is checked and compressed whole (`prepare`) before anything is written
(`write`), so a record that does not fit, or that its producer reports torn, leaves no trace.

Knows nothing of rings or sockets: it is given values.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import hdf5plugin
import numpy as np

from shmcam.bsread import Compressed
from shmcam.bsread.compression import BITSHUFFLE_LZ4, compress

LAYOUT = "shmcam-store/1"
#: bitshuffle (HDF5 filter 32008) with LZ4; readers `import hdf5plugin`.
BITSHUFFLE = hdf5plugin.Bitshuffle(cname="lz4")
META = {
    "pulse_id": np.int64,
    "timestamp": np.int64,
    "timestamp_offset": np.int64,
    "is_data_present": np.uint8,
}
META_CHUNK = 1024
ROW_CHUNK_BYTES = 64 << 10
_STRING = h5py.string_dtype()


class LayoutChange(ValueError):
    """A value that does not fit its channel's dataset: the channel changed type or shape."""


class WriteError(OSError):
    """The file cannot be written (disk full, file system gone): the run cannot go on."""


class _Spec(NamedTuple):
    """What a channel's `data` dataset holds per row."""

    kind: str  # "image" (a chunk per row), "array" (numbers) or "string"
    dtype: np.dtype | None  # None for strings
    shape: tuple[int, ...]  # of one row, numpy order

    def describe(self) -> str:
        if self.kind == "string":
            return "strings"
        return f"{self.dtype} of shape {self.shape}"


class Record(NamedTuple):
    """One prepared record: the payload per channel (a chunk, an array or a str)."""

    pulse_id: int
    timestamp: tuple[int, int]
    payloads: dict[str, tuple[_Spec, Any]]
    timestamps: Mapping[str, tuple[int, int] | None]


class StoreFile:
    """One run's file. `general` becomes attributes of `/general` (str, int or float)."""

    def __init__(self, path: Path, general: Mapping[str, Any]):
        if path.exists():
            raise FileExistsError(f"{path} exists: a store never overwrites a file")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.records = 0
        self.bytes_written = 0  # image chunk bytes
        self._broken = False
        self._channels: dict[str, _Channel] = {}
        # The default (earliest) format on purpose: newer superblocks mark a file open for
        # writing, and then nothing opens it during the run or after a crash without h5clear.
        self._file = h5py.File(path, "w-")
        try:
            self._general = self._file.create_group("general")
            self._general.attrs.update({"layout": LAYOUT, **general})
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

        Values: numbers, str, numpy arrays (views are read here, not later), `Compressed`
        bitshuffle_lz4 parts, or None (no data). `timestamps` gives channels their own
        (sec, ns); the others get the record's `timestamp`.
        """
        payloads = {}
        for name, value in values.items():
            spec, payload = _describe(value)
            if spec is None:
                continue
            channel = self._channels.get(name)
            if channel is not None and not channel.takes(spec):
                raise LayoutChange(
                    f"channel {name!r} changed from {channel.spec.describe()} to {spec.describe()}"
                )
            if spec.kind == "image" and not isinstance(payload, Compressed):
                payload = compress(payload, BITSHUFFLE_LZ4)
            elif spec.kind == "array":
                payload = payload.copy()  # kept until flush(); its source may be reused
            payloads[name] = (spec, payload)
        return Record(pulse_id, timestamp, payloads, timestamps or {})

    def write(self, record: Record) -> None:
        """Append a prepared record: a row for every channel (empty where it has no value)."""
        with self._writing():
            self._write(record)

    def _write(self, record: Record) -> None:
        for name, (spec, _) in record.payloads.items():
            if name not in self._channels:
                self._channels[name] = _Channel(self._data.create_group(group_name(name)), spec)
        for name, channel in self._channels.items():
            payload = record.payloads.get(name)
            timestamp = record.timestamps.get(name) or record.timestamp
            self.bytes_written += channel.add(
                record.pulse_id, timestamp, None if payload is None else payload[1]
            )
        self.records += 1

    def flush(self) -> None:
        """Append the buffered rows and flush the file: a reader now sees every record."""
        with self._writing():
            for channel in self._channels.values():
                channel.flush()
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
                self._general.attrs.update({"records": self.records, "end_reason": end_reason})
                self.flush()
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


def group_name(channel: str) -> str:
    """A channel's group name under /data: '/' would nest groups and '.' names the parent."""
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


class _Channel:
    """A channel's datasets and its rows not yet appended."""

    def __init__(self, group: h5py.Group, spec: _Spec):
        self.spec = spec
        self.rows = 0  # rows so far, buffered ones included
        self._stored = 0  # rows in the row datasets
        self._meta = {
            key: group.create_dataset(key, (0,), dtype, maxshape=(None,), chunks=(META_CHUNK,))
            for key, dtype in META.items()
        }
        self._pending_meta: list[tuple[int, int, int, int]] = []
        self._pending: list[Any] = []
        if spec.kind == "image":
            self._data = group.create_dataset(
                "data",
                (0, *spec.shape),
                spec.dtype,
                maxshape=(None, *spec.shape),
                chunks=(1, *spec.shape),
                **BITSHUFFLE,
            )
        elif spec.kind == "string":
            self._data = group.create_dataset(
                "data", (0,), _STRING, maxshape=(None,), chunks=(META_CHUNK,)
            )
        else:
            row_bytes = max(1, int(np.prod(spec.shape)) * spec.dtype.itemsize)
            rows = max(1, min(META_CHUNK, ROW_CHUNK_BYTES // row_bytes))
            self._data = group.create_dataset(
                "data",
                (0, *spec.shape),
                spec.dtype,
                maxshape=(None, *spec.shape),
                chunks=(rows, *spec.shape),
            )

    def takes(self, spec: _Spec) -> bool:
        """Whether a value of this spec fits: images exactly (their chunk bytes are stored as
        they are), numbers if their shape is the same and their type casts losslessly."""
        mine = self.spec
        if mine.kind != spec.kind:
            return False
        if mine.kind == "array":
            return mine.shape == spec.shape and np.can_cast(spec.dtype, mine.dtype, "safe")
        return mine == spec

    def add(self, pulse_id: int, timestamp: tuple[int, int], payload: Any) -> int:
        """One row (payload None: no data); the bytes written to the file now."""
        row, written = self.rows, 0
        self.rows += 1
        self._pending_meta.append((pulse_id, timestamp[0], timestamp[1], payload is not None))
        if self.spec.kind != "image":
            self._pending.append(payload)
        elif payload is not None:
            chunk = payload.data if isinstance(payload, Compressed) else payload
            self._data.resize(self.rows, axis=0)
            self._data.id.write_direct_chunk((row, *(0,) * len(self.spec.shape)), chunk)
            written = len(chunk)
        return written

    def flush(self) -> None:
        start, end = self._stored, self.rows
        if start == end:
            return
        columns = zip(*self._pending_meta)
        for dataset, column in zip(self._meta.values(), columns):
            dataset.resize(end, axis=0)
            dataset[start:end] = np.asarray(column, dataset.dtype)
        if self._data.shape[0] < end:  # images: rows without data are left unallocated
            self._data.resize(end, axis=0)
        if self.spec.kind == "string":
            self._data[start:end] = np.array([v or "" for v in self._pending], dtype=object)
        elif self.spec.kind == "array":
            block = np.zeros((end - start, *self.spec.shape), self.spec.dtype)
            for index, value in enumerate(self._pending):
                if value is not None:
                    block[index] = value
            self._data[start:end] = block
        self._pending_meta.clear()
        self._pending.clear()
        self._stored = end
