"""Shared-memory frame rings and statistics blocks: the node's zero-copy data plane.

This layer knows nothing of cameras, pipelines or streams (see design.md, "The ring").
"""

from .ring import Frame, RingReader, RingWriter, generations, ring_base
from .segment import ShmError, remove_all, remove_stale, segment_name
from .stats import StatsBlock, stats_name

__all__ = [
    "Frame",
    "RingReader",
    "RingWriter",
    "ShmError",
    "StatsBlock",
    "generations",
    "remove_all",
    "remove_stale",
    "ring_base",
    "segment_name",
    "stats_name",
]
