"""Shared-memory frame rings, record rings and statistics blocks: the node's zero-copy data plane.

This layer knows nothing of cameras, pipelines or streams (see design.md, "The ring").

The rings' seqlock relies on x86-64's memory model (stores are seen in program order, and loads
too): Python cannot issue the barriers a weakly ordered CPU (ARM, POWER) needs, so this package
refuses to load elsewhere instead of handing out torn data. C programs on any architecture use
include/shmcam/, which has the barriers (docs/ring.md, "Memory ordering").
"""

import platform

if platform.machine() not in ("x86_64", "AMD64"):
    raise ImportError(
        f"shmcam.shm runs on x86-64 only, not {platform.machine()}: the shared-memory rings' "
        "seqlock needs memory barriers on weakly ordered CPUs, which Python cannot issue. "
        "Read and write rings from C with include/shmcam/*.h there (see docs/ring.md)."
    )

from .records import Record, RecordReader, RecordWriter, create_record_ring  # noqa: E402
from .ring import Frame, RingReader, RingWriter  # noqa: E402
from .segment import ShmError, remove_all, remove_stale, segment_name  # noqa: E402
from .slotring import generations, remove_ring, ring_base  # noqa: E402
from .stats import StatsBlock, stats_name  # noqa: E402

__all__ = [
    "Frame",
    "Record",
    "RecordReader",
    "RecordWriter",
    "RingReader",
    "RingWriter",
    "ShmError",
    "StatsBlock",
    "create_record_ring",
    "generations",
    "remove_all",
    "remove_ring",
    "remove_stale",
    "ring_base",
    "segment_name",
    "stats_name",
]
