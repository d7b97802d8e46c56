"""Statistics blocks and the segment sweeper, across real processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shmcam.shm import StatsBlock, remove_stale, segment, stats_name

WRITER = """
import sys
from shmcam.shm import StatsBlock
block = StatsBlock(sys.argv[1], create=True)
for ms in range(1, 101):           # processing times 1..100 ms
    block.add("frames_in")
    block.record_time(ms * 1_000_000)
block.add("errors", 3)
block.set("clients", 2)
print("ready", flush=True)
sys.stdin.readline()
block.close()
"""


def test_counters_written_by_an_instance_are_read_by_a_monitor(node):
    name = stats_name(node, "pipe")
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        monitor = StatsBlock(name)
        snap = monitor.snapshot()
        assert monitor.owner_pid == child.pid
        assert (snap["frames_in"], snap["errors"], snap["clients"]) == (100, 3, 2)
        assert snap["proc_ns_total"] == sum(ms * 1_000_000 for ms in range(1, 101))
        assert snap["proc_ns_last"] == 100_000_000
        # quarter-octave buckets: within 10 % of the true percentiles (50 ms, 99 ms)
        assert snap["proc_ms_p50"] == pytest.approx(50, rel=0.1)
        assert snap["proc_ms_p99"] == pytest.approx(99, rel=0.1)
        monitor.close()
        child.stdin.write("stop\n")
        child.stdin.flush()
        assert child.wait(10) == 0
    finally:
        if child.poll() is None:
            child.kill()
    assert segment.list_segments(name) == []  # the instance removed its block


def test_empty_histogram_has_no_percentiles(node):
    with StatsBlock(stats_name(node, "idle"), create=True) as block:
        snap = block.snapshot()
    assert snap["proc_ms_p50"] is None and snap["frames_out"] == 0


def test_attaching_to_something_else_is_refused(node):
    import numpy as np

    from shmcam.shm import RingWriter, ring_base

    with RingWriter(ring_base(node, "cam"), np.uint8, (2, 2)) as ring:
        with pytest.raises(segment.ShmError, match="not a shmcam statistics block"):
            StatsBlock(ring.name)


def test_sweeper_removes_only_segments_of_dead_owners(node):
    dead = stats_name(node, "dead")
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from shmcam.shm import StatsBlock; "
            "StatsBlock(sys.argv[1], create=True)  # exits without closing",
            dead,
        ],
        check=True,
    )
    with StatsBlock(stats_name(node, "alive"), create=True) as alive:
        assert remove_stale(f"shmcam.{node}.") == [dead]
        assert segment.list_segments(f"shmcam.{node}.") == [alive.name]
