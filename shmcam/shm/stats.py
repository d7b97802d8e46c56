"""Per-instance statistics in a small shared-memory block.

The instance is the only writer and bumps plain aligned int64 counters; monitors (`shmcam top`,
the REST API) read them whenever they like. No locks and no per-frame IPC: a reader may see one
counter a frame ahead of another, which no statistic cares about.
"""

from __future__ import annotations

import math
import os
import time

from . import layout, segment

_INDEX = {name: i for i, name in enumerate(layout.STATS_FIELDS)}
_HIST0 = len(layout.STATS_FIELDS)


def stats_name(node: str, instance: str) -> str:
    return segment.segment_name(node, instance, "stats")


def _bucket(ns: int) -> int:
    if ns < 2000:
        return 0
    return min(layout.HIST_BUCKETS - 1, int(4 * math.log2(ns / 1000.0)))


def _bucket_ms(b: int) -> float:
    return 2 ** ((b + 0.5) / 4) / 1000.0  # geometric middle of the bucket


class StatsBlock:
    """Counters of one instance. Create as the instance, attach as a monitor; attach
    `writable` as an external program updating the block its supervisor created for it."""

    def __init__(self, name: str, create: bool = False, writable: bool = False):
        self.name = name
        if create:
            mm = segment.create(
                name,
                layout.STATS_SIZE,
                lambda mm: layout.STATS_HEADER.pack_into(
                    mm,
                    0,
                    layout.STATS_MAGIC,
                    layout.STATS_VERSION,
                    layout.STATS_HEADER_SIZE,
                    os.getpid(),
                    time.time_ns(),
                    len(layout.STATS_FIELDS),
                    layout.HIST_BUCKETS,
                ),
            )
        else:
            mm, _ = segment.attach(name, writable=writable)
            magic, version, _, _, _, fields, buckets = layout.STATS_HEADER.unpack_from(mm, 0)
            if (
                magic != layout.STATS_MAGIC
                or version != layout.STATS_VERSION
                or (fields, buckets) != (len(layout.STATS_FIELDS), layout.HIST_BUCKETS)
                or len(mm) < layout.STATS_SIZE
            ):
                mm.close()
                raise segment.ShmError(f"{name} is not a shmcam statistics block")
        self._owner = create
        self._mm = mm
        self._q = memoryview(mm)[layout.STATS_HEADER_SIZE :].cast("q")

    @property
    def owner_pid(self) -> int:
        return layout.STATS_HEADER.unpack_from(self._mm, 0)[3]

    def add(self, field: str, n: int = 1) -> None:
        self._q[_INDEX[field]] += n

    def set(self, field: str, value: int) -> None:
        self._q[_INDEX[field]] = value

    def record_time(self, ns: int) -> None:
        """Account one processing time (ns): total, last and the histogram."""
        q = self._q
        q[_INDEX["proc_ns_total"]] += ns
        q[_INDEX["proc_ns_last"]] = ns
        q[_HIST0 + _bucket(ns)] += 1

    def times(self) -> tuple[int, int, list[int]]:
        """(total ns, last ns, histogram counts) of the processing times."""
        q = self._q
        return q[_INDEX["proc_ns_total"]], q[_INDEX["proc_ns_last"]], q[_HIST0:].tolist()

    def set_times(self, total_ns: int, last_ns: int, counts: list[int]) -> None:
        """Processing times accounted elsewhere (the sum of a parallel pipeline's workers)."""
        q = self._q
        q[_INDEX["proc_ns_total"]] = total_ns
        q[_INDEX["proc_ns_last"]] = last_ns
        for bucket, count in enumerate(counts):
            q[_HIST0 + bucket] = count

    def touch(self) -> None:
        self._q[_INDEX["updated_ns"]] = time.time_ns()

    def snapshot(self) -> dict:
        """Counters by name, plus processing-time percentiles (ms, quarter-octave resolution)."""
        values = self._q.tolist()
        out = dict(zip(layout.STATS_FIELDS, values))
        out["proc_ms_p50"], out["proc_ms_p99"] = _percentiles(values[_HIST0:], (0.5, 0.99))
        return out

    def histogram(self) -> list[tuple[float, int]]:
        """Processing-time histogram as (upper bound in seconds, count) per bucket."""
        counts = self._q[_HIST0:].tolist()
        return [(2 ** ((b + 1) / 4) * 1e-6, c) for b, c in enumerate(counts)]

    def close(self) -> None:
        """Detach; the creating instance also removes the block."""
        if self._mm is None:
            return
        self._q.release()
        self._mm.close()
        self._mm = None
        if self._owner:
            segment.unlink(self.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _percentiles(hist: list[int], quantiles: tuple[float, ...]) -> list[float | None]:
    total = sum(hist)
    if total == 0:
        return [None] * len(quantiles)
    out = []
    for q in quantiles:
        rank, seen = q * total, 0
        for b, count in enumerate(hist):
            seen += count
            if seen >= rank:
                out.append(_bucket_ms(b))
                break
    return out
