"""The ring's binary layout, version 1: the contract with readers in any language.

Mirrored field by field in include/shmcam/ring.h and described in docs/ring.md. All integers
are little-endian and naturally aligned; payloads start on 64-byte boundaries.
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

# Ring header, offset 0 (the first 32 bytes are the common segment preamble).
HEADER = struct.Struct("<8sIIqQIIQQQQQII8sI3IQQ")
assert HEADER.size == HEADER_SIZE
# Byte offsets of the fields that change while the ring lives.
OFF_WRITE_SEQ = 64  # i64: frames published over the ring's life; the newest is write_seq - 1
OFF_FIRST_SEQ = 72  # i64: write_seq when this generation was created
OFF_STATE = 80  # u32: LIVE, SUPERSEDED or CLOSED
OFF_FUTEX = 84  # u32: bumped after every publication and state change

LIVE, SUPERSEDED, CLOSED = 0, 1, 2

# Slot header, at HEADER_SIZE + i * slot_stride; the payload follows at + SLOT_HEADER_SIZE.
OFF_SLOT_SEQ = 0  # u64: 0 never written, 2n+1 while frame n is written, 2n+2 once complete
# At offset 8: pulse_id, ts_sec, ts_ns, publish_ns (CLOCK_MONOTONIC), nbytes, dtype, ndim, shape,
# then the frame's linear axes x0, dx, y0, dy (x_axis[i] = x0 + i*dx; dx = dy = 0: pixel numbers).
SLOT_META = struct.Struct("<qqqQQ8sI3Idddd")
OFF_SLOT_META = 8
SLOT_READ = struct.Struct("<qqqQ32xdddd")  # what a reader needs per frame, in one unpack
NO_AXES = (0.0, 0.0, 0.0, 0.0)

# Statistics block: preamble, field count, then NAMES as int64 counters, then the histogram.
STATS_MAGIC = b"SHMCAMST"
STATS_VERSION = 1
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
