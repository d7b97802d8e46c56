"""The rings' binary layouts: the contract with readers and writers in any language.

Frame rings (layout version 1) and record rings (version 1 of their own magic) share the first
88 bytes of their header. Mirrored field by field in include/shmcam/ (common.h, ring.h,
records.h, stats.h) and described in docs/ring.md. All integers are little-endian and naturally
aligned; payloads start on 64-byte boundaries.
"""

from __future__ import annotations

import struct

import numpy as np

MAGIC = b"SHMCAMRG"
VERSION = 1
HEADER_SIZE = 128
SLOT_HEADER_SIZE = 128
ALIGN = 64
MAX_NDIM = 3

# The header every ring starts with (its first 32 bytes are the common segment preamble):
# magic, version, header_size, owner_pid, created_ns, slot_count, slot_header_size,
# slot_stride, payload_capacity, generation, write_seq, first_seq, state, futex.
COMMON_HEADER = struct.Struct("<8sIIqQIIQQQQQII")
assert COMMON_HEADER.size == 88
# A frame ring's header: the common part, then its geometry (dtype, ndim, shape, frame_nbytes).
FRAME_GEOMETRY = struct.Struct("<8sI3IQQ")
HEADER = struct.Struct(COMMON_HEADER.format + FRAME_GEOMETRY.format[1:])
assert HEADER.size == HEADER_SIZE
# Byte offsets of the fields that change while the ring lives.
OFF_WRITE_SEQ = 64  # i64: frames published over the ring's life; the newest is write_seq - 1
OFF_FIRST_SEQ = 72  # i64: write_seq when this generation was created
OFF_STATE = 80  # u32: LIVE, SUPERSEDED or CLOSED
OFF_FUTEX = 84  # u32: bumped after every publication and state change

LIVE, SUPERSEDED, CLOSED = 0, 1, 2
# Every slot of either kind starts with its sequence word (u64 at offset 0), the seqlock.

# Frame slot header, at HEADER_SIZE + i * slot_stride; the payload follows at + SLOT_HEADER_SIZE.
# seq (u64 at 0): 0 never written, 2n+1 while frame n is written, 2n+2 once complete.
# At offset 8: pulse_id, ts_sec, ts_ns, publish_ns (CLOCK_MONOTONIC), nbytes, dtype, ndim, shape,
# then the frame's linear axes x0, dx, y0, dy (x_axis[i] = x0 + i*dx; dx = dy = 0: pixel numbers).
SLOT_META = struct.Struct("<qqqQQ8sI3Idddd")
OFF_SLOT_META = 8
SLOT_READ = struct.Struct("<qqqQ32xdddd")  # what a reader needs per frame, in one unpack
NO_AXES = (0.0, 0.0, 0.0, 0.0)

# Record rings: the common header, then 40 reserved bytes. A slot holds one record: a 64-byte
# slot header, then payloads (each on a 64-byte boundary) and the channel table (RECORD_ENTRY
# per channel, then the names, each NUL-terminated) wherever the slot header says. Offsets in
# the table count from the slot's start.
RECORDS_MAGIC = b"SHMCAMRC"
RECORDS_VERSION = 1
RECORD_SLOT_HEADER_SIZE = 64
# At 8: pulse_id, ts_sec, ts_ns, publish_ns (CLOCK_MONOTONIC), format, table_offset,
# channel_count, table_nbytes (entries and names).
RECORD_META = struct.Struct("<qqqQQQII")
OFF_RECORD_META = 8
RECORD_ENTRY = struct.Struct("<QQ3IHHII")
RECORD_SPAN = struct.Struct("<QQ")  # an entry's offset and nbytes: all a string changes
RECORD_TABLE_ALIGN = 8
RECORD_MAX_NDIM = 3
# Channel types: the bsread types (docs/spec/bsread.md section 5) plus "null" for a None value.
# The position is the type's code in the table; the numpy code is stored little-endian.
RECORD_TYPES = (
    ("null", None),
    ("bool", "?"),
    ("int8", "i1"),
    ("uint8", "u1"),
    ("int16", "i2"),
    ("uint16", "u2"),
    ("int32", "i4"),
    ("uint32", "u4"),
    ("int64", "i8"),
    ("uint64", "u8"),
    ("float32", "f4"),
    ("float64", "f8"),
    ("string", "u1"),  # UTF-8 bytes, ndim 0, followed by a NUL not counted in nbytes
)
TYPE_NULL, TYPE_STRING = 0, 12
assert RECORD_TYPES[TYPE_STRING][0] == "string"

# Statistics block: preamble, field count, then NAMES as int64 counters, then the histogram.
STATS_MAGIC = b"SHMCAMST"
STATS_VERSION = 3
STATS_HEADER = struct.Struct("<8sIIqQII")
STATS_HEADER_SIZE = 64
STATS_FIELDS = (
    "frames_in",  # frames taken from the input (ring or stream)
    "frames_out",  # messages/frames emitted
    "dropped",  # input frames missed (reader lapped, queue full)
    "torn",  # frames overwritten while being processed, result discarded
    "errors",  # processing errors
    "bytes_out",  # payload bytes emitted
    "clients",  # connected stream clients (gauge)
    "proc_ns_total",  # sum of processing times
    "proc_ns_last",  # last processing time
    "lag",  # frames between the newest in the ring and the one being processed (gauge)
    "updated_ns",  # CLOCK_REALTIME of the last update
    "header_changes",  # data headers built for the output stream (format changes)
    "frame_height",  # shape of the last frame taken from the input (gauges)
    "frame_width",
    "forwarder_clients",  # a camera's DataBuffer feed clients (gauge; CamServer's "N + M")
    "bytes_in",  # bytes of the frames taken from the input (CamServer's total_bytes)
    "frame_itemsize",  # bytes per pixel of the last frame (gauge; CamServer's frame_shape)
)
# Processing-time histogram: bucket b counts times t (ns) with floor(4*log2(t/1000)) == b,
# clamped to [0, HIST_BUCKETS): quarter octaves from 1 µs to about 16 s.
HIST_BUCKETS = 96
STATS_SIZE = STATS_HEADER_SIZE + 8 * (len(STATS_FIELDS) + HIST_BUCKETS)


def align(n: int, to: int = ALIGN) -> int:
    return (n + to - 1) // to * to


def dtype_code(dtype: np.dtype) -> bytes:
    """numpy typestr ('<u2', '|u1', '>f8') padded to the 8-byte field."""
    code = np.dtype(dtype).str.encode()
    if len(code) > 8 or np.dtype(dtype).hasobject or np.dtype(dtype).fields:
        raise ValueError(f"dtype {dtype} cannot be stored in a ring")
    return code.ljust(8, b"\0")


def dtype_from_code(raw: bytes) -> np.dtype:
    return np.dtype(raw.rstrip(b"\0").decode())


def shape_fields(shape: tuple[int, ...]) -> tuple[int, ...]:
    if not 1 <= len(shape) <= MAX_NDIM:
        raise ValueError(f"frames must have 1 to {MAX_NDIM} dimensions, got shape {shape}")
    return (len(shape), *shape, *([0] * (MAX_NDIM - len(shape))))
