"""The ring with writer and readers in separate processes.

The tests taking `kind` run twice: on a frame ring, and on a record ring whose records carry
the same frames as their `image` channel (tests/ringproc.py --records).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shmcam.shm import RingReader, RingWriter, ShmError, generations, ring_base, segment


@pytest.fixture(params=["frames", "records"])
def kind(request):
    """Extra helper arguments for the kind of ring under test."""
    return ("--records",) if request.param == "records" else ()


def start_ring(procs, base, *writer_args, readers=1, reader_args=(), kind=()):
    writer = procs.start("writer", base, *writer_args, *kind)
    procs.expect(writer, "ready")
    started = []
    for _ in range(readers):
        reader = procs.start("reader", base, *reader_args, *kind)
        procs.expect(reader, "ready")
        started.append(reader)
    procs.go(writer)
    return writer, started


def test_frames_arrive_in_order_with_content_and_metadata(node, procs, kind):
    base = ring_base(node, "cam")
    writer, readers = start_ring(
        procs,
        base,
        "--frames",
        "300",
        "--rate",
        "300",
        "--slots",
        "64",
        readers=2,
        reader_args=("--frames", "300"),
        kind=kind,
    )
    assert procs.result(writer)["written"] == 300
    for reader in readers:
        seen = procs.result(reader)
        assert seen["bad_content"] == 0
        assert seen["pulse_ids"] == sorted(set(seen["pulse_ids"]))
        # every frame is either received or counted as missed, exactly
        assert seen["received"] + seen["missed"] == 300
        assert len(seen["pulse_ids"]) == seen["received"] >= 290
        assert seen["torn"] == 0 and seen["shapes"] == [[48, 64, "<u2"]]


def test_slow_reader_skips_to_newest_and_counts(node, procs, kind):
    base = ring_base(node, "cam")
    writer, (reader,) = start_ring(
        procs,
        base,
        "--frames",
        "400",
        "--rate",
        "400",
        "--slots",
        "16",
        reader_args=("--frames", "400", "--delay", "0.02", "--timeouts", "1"),
        kind=kind,
    )
    procs.result(writer)
    seen = procs.result(reader)
    assert seen["bad_content"] == 0
    taken = seen["taken"]
    assert taken == sorted(set(taken)) and len(taken) == seen["received"]
    assert seen["missed"] > 100
    # every frame up to the last one taken was either taken or counted as missed
    assert seen["received"] + seen["missed"] == taken[-1] + 1
    # a lapped reader jumps to the newest frame: a gap of at least a ring's depth
    assert max(b - a for a, b in zip(taken, taken[1:])) >= 16
    assert len(seen["pulse_ids"]) + seen["torn"] == seen["received"]


def test_latest_policy_always_hands_out_the_newest(node):
    base = ring_base(node, "cam")
    with RingWriter(base, np.uint8, (4, 4), slots=4) as w, RingReader(base, policy="latest") as r:
        for i in range(3):
            w.write(np.full((4, 4), i, np.uint8), i, (0, i))
        frame = r.wait(0)
        assert frame.pulse_id == 2 and r.missed == 2
        assert r.wait(0) is None


def test_torn_frames_are_detected_never_used(node, procs, kind):
    base = ring_base(node, "cam")
    writer, (reader,) = start_ring(
        procs,
        base,
        "--frames",
        "3000",
        "--slots",
        "2",
        "--pattern",
        "flat",
        "--shapes",
        "256x512",
        reader_args=(
            "--frames",
            "3000",
            "--pattern",
            "flat",
            "--timeout",
            "0.5",
            "--timeouts",
            "1",
            "--delay",
            "0.002",
        ),
        kind=kind,
    )
    procs.result(writer)
    seen = procs.result(reader)
    assert seen["torn"] > 0, "a writer lapping a 2-slot ring must tear some frames"
    assert seen["bad_content"] == 0, "a torn frame passed validation"
    assert len(seen["pulse_ids"]) > 0


def test_writer_killed_readers_time_out_cleanly(node, procs, kind):
    base = ring_base(node, "cam")
    writer, (reader,) = start_ring(
        procs,
        base,
        "--frames",
        "100000",
        "--rate",
        "200",
        reader_args=("--frames", "100000", "--timeout", "0.3", "--timeouts", "2"),
        kind=kind,
    )
    procs.expect(reader, "first")
    writer.kill()  # no chance to clean up
    writer.wait()
    seen = procs.result(reader)
    assert seen["timeouts"] == 2
    assert seen["writer_alive"] is False
    assert seen["bad_content"] == 0
    # the dead writer's ring is stale now, and the sweeper finds it
    (left,) = generations(base)  # records: the first record made the slots grow, g1
    assert segment.remove_stale(f"shmcam.{node}.") == [f"{base}.g{left}"]


def test_reader_killed_writer_and_other_readers_unaffected(node, procs, kind):
    base = ring_base(node, "cam")
    writer, (victim, survivor) = start_ring(
        procs,
        base,
        "--frames",
        "400",
        "--rate",
        "400",
        "--slots",
        "64",
        readers=2,
        reader_args=(
            "--frames",
            "400",
        ),
        kind=kind,
    )
    procs.expect(victim, "first")
    victim.kill()
    assert procs.result(writer)["written"] == 400
    seen = procs.result(survivor)
    assert seen["received"] + seen["missed"] == 400 and seen["bad_content"] == 0
    assert not segment.list_segments(base)


def test_geometry_change_opens_a_new_generation_readers_follow(node, procs):
    base = ring_base(node, "cam")
    writer, (reader,) = start_ring(
        procs,
        base,
        "--frames",
        "90",
        "--rate",
        "300",
        "--slots",
        "64",
        "--shapes",
        "48x64,16x32:u1,96x128:u2",
        "--hold",
        reader_args=("--frames", "90"),
    )
    seen = procs.result(reader)
    procs.expect(writer, "held")
    writer.stdin.write("done\n")
    writer.stdin.flush()
    result = procs.result(writer)
    assert result["generations"] == [0, 1, 2]
    assert seen["shapes"] == [[48, 64, "<u2"], [16, 32, "|u1"], [96, 128, "<u2"]]
    assert seen["bad_content"] == 0
    assert seen["received"] + seen["missed"] == 90 and seen["generation"] == "2"


def test_restarted_writer_is_followed_and_retires_the_old_ring(node, procs, kind):
    base = ring_base(node, "cam")
    first, (reader,) = start_ring(
        procs,
        base,
        "--frames",
        "20",
        "--slots",
        "64",
        "--hold",
        "--keep",
        reader_args=("--frames", "40", "--timeout", "2"),
        kind=kind,
    )
    procs.expect(first, "held")
    first.kill()  # a crashed camera leaves its generation behind
    first.wait()
    (left,) = generations(base)  # records: the first record made the slots grow, g1
    # the second writer holds its ring until the reader is done: a reader starved for longer
    # than the writer lives would find no successor left to follow
    second = procs.start("writer", base, "--frames", "20", "--slots", "64", "--hold", *kind)
    procs.expect(second, "ready")
    assert generations(base) == [left + 1]  # the new writer retired the stale generation
    procs.go(second)
    procs.expect(second, "held")
    seen = procs.result(reader)
    second.stdin.write("done\n")
    second.stdin.flush()
    procs.result(second)
    assert seen["received"] == 40 and seen["bad_content"] == 0
    assert seen["pulse_ids"] == list(range(1000, 1020)) * 2


def test_reader_in_child_does_not_unlink_the_ring(node):
    """docs/pitfalls.md: a tracked attach in a child unlinks the segment when the child exits."""
    base = ring_base(node, "cam")
    code = (
        "import sys; from shmcam.shm import RingReader; r = RingReader(sys.argv[1]); "
        "f = r.latest(); print(f.pulse_id); r.close()"
    )
    control = (
        "import sys; from multiprocessing.shared_memory import SharedMemory; "
        "SharedMemory(name=sys.argv[1]).close()"
    )
    with RingWriter(base, np.uint16, (8, 8)) as w:
        w.write(np.zeros((8, 8), np.uint16), 7, (0, 0))
        out = subprocess.run([sys.executable, "-c", code, base], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.strip() == "7", out.stderr
        assert "leaked" not in out.stderr
        assert generations(base) == [0]
        # Control: the same attach through SharedMemory does unlink what it does not own.
        subprocess.run(
            [sys.executable, "-W", "ignore", "-c", control, w.name], check=True, capture_output=True
        )
        assert generations(base) == []


def test_views_outlive_close_without_crashing(node):
    """Closing a reader while a frame view is held must not unmap it under the view."""
    base = ring_base(node, "cam")
    code = (
        "import sys; from shmcam.shm import RingReader; r = RingReader(sys.argv[1]); "
        "f = r.latest(); r.close(); import gc; gc.collect(); print(int(f.image.sum()))"
    )
    with RingWriter(base, np.uint16, (8, 8)) as w:
        w.write(np.full((8, 8), 3, np.uint16), 1, (0, 0))
        out = subprocess.run([sys.executable, "-c", code, base], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "192"


def test_frames_are_read_only_views(node):
    base = ring_base(node, "cam")
    with RingWriter(base, np.uint16, (8, 8)) as w, RingReader(base) as r:
        w.write(np.ones((8, 8), np.uint16), 1, (0, 0))
        frame = r.wait(1)
        assert not frame.image.flags.writeable and frame.image.flags.c_contiguous
        with pytest.raises(ValueError):
            frame.image[0, 0] = 5
        assert r.validate(frame)
        w.write(np.ones((8, 8), np.uint16), 2, (0, 0))
        assert frame.image.base is not None  # a view, not a copy: same memory as the slot


def test_waiting_reader_wakes_on_write(node):
    base = ring_base(node, "cam")
    with RingWriter(base, np.uint8, (2, 2)) as w, RingReader(base) as r:
        assert r.wait(0.05) is None
        w.write(np.zeros((2, 2), np.uint8), 5, (1, 2))
        frame = r.wait(0.5)
        assert (frame.pulse_id, frame.timestamp, frame.index) == (5, (1, 2), 0)


def test_closed_writer_reader_times_out(node):
    base = ring_base(node, "cam")
    w = RingWriter(base, np.uint8, (2, 2))
    r = RingReader(base)
    w.close()
    assert r.wait(0.1) is None
    assert not r.writer_alive()
    r.close()


def test_missing_ring_and_bad_names_are_clear_errors(node):
    with pytest.raises(FileNotFoundError, match="no ring named"):
        RingReader(ring_base(node, "absent"))
    for bad in ("../etc", "a/b", "a.b", "", "x" * 101):
        with pytest.raises(ValueError, match="invalid name"):
            ring_base(node, bad)
    with pytest.raises(ValueError, match="dimensions"):
        RingWriter(ring_base(node, "cam"), np.uint8, (2, 2, 2, 2))


def test_no_room_in_dev_shm_is_a_clear_error_and_creates_nothing(node):
    base = ring_base(node, "huge")
    too_big = segment.free_bytes() // 2 // 8 + 1  # uint64 elements: two slots exceed the space
    with pytest.raises(ShmError, match="not enough shared memory"):
        RingWriter(base, np.uint64, (too_big, 1), slots=2)
    assert generations(base) == []


def test_a_geometry_that_does_not_fit_leaves_the_writer_on_the_old_one(node):
    base = ring_base(node, "cam")
    with RingWriter(base, np.uint8, (2, 2), slots=2) as w, RingReader(base) as r:
        too_big = segment.free_bytes() // 2 // 8 + 1  # two slots of it exceed /dev/shm
        with pytest.raises(ShmError, match="not enough shared memory"):
            w.write(np.broadcast_to(np.uint64(0), (too_big, 1)), 1, (0, 0))
        w.write(np.full((2, 2), 5, np.uint8), 2, (0, 0))
        frame = r.wait(0)
        assert frame.pulse_id == 2 and frame.image.tolist() == [[5, 5], [5, 5]]
        assert generations(base) == [0]


def test_c_reader_reads_frames_written_by_python(node, cc):
    """The layout is a contract: a C program using include/shmcam/ring.h reads our frames."""
    exe = cc(Path(__file__).parent / "c" / "ring_reader.c")
    base = ring_base(node, "cam")
    with RingWriter(base, np.uint16, (48, 64), slots=8) as w:
        frames = [(np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * (i + 1)) for i in range(4)]
        for i, f in enumerate(frames[:3]):
            w.write(f, 1000 + i, (1_700_000_000, i), axes=(100.0 + i, -0.5, 0.0, 1.0))
        reader = subprocess.Popen([str(exe), w.name, "4"], stdout=subprocess.PIPE, text=True)
        try:
            lines = [reader.stdout.readline().split() for _ in range(3)]
            assert reader.stdout.readline().strip() == "waiting"
            w.write(
                frames[3],
                1003,
                (1_700_000_000, 3),  # the C reader sleeps on the futex
                axes=(103.0, -0.5, 0.0, 1.0),
            )
            lines.append(reader.stdout.readline().split())
            assert reader.wait(10) == 0
        finally:
            if reader.poll() is None:
                reader.kill()
            reader.stdout.close()
    for i, (index, pulse, sec, ns, dtype, height, width, total, x0, dx) in enumerate(lines):
        assert (float(x0), float(dx)) == (100.0 + i, -0.5)
        assert (int(index), int(pulse), int(sec), int(ns)) == (i, 1000 + i, 1_700_000_000, i)
        assert (dtype, int(height), int(width)) == ("<u2", 48, 64)
        assert int(total) == int(frames[i].sum(dtype=np.uint64))


def test_skip_to_newest_passes_over_frames_without_counting_them(node):
    base = ring_base(node, "cam")
    with RingWriter(base, np.uint8, (2, 2), slots=4) as w, RingReader(base) as r:
        for i in range(10):
            w.write(np.zeros((2, 2), np.uint8), i, (0, 0))
        r.skip_to_newest()
        assert r.wait(0) is None
        w.write(np.zeros((2, 2), np.uint8), 10, (0, 0))
        assert r.wait(0).pulse_id == 10 and r.missed == 0


def test_frames_carry_their_linear_axes(node):
    base = ring_base(node, "cam")
    with RingWriter(base, np.uint8, (2, 3)) as w, RingReader(base) as r:
        w.write(np.zeros((2, 3), np.uint8), 1, (0, 0), axes=(50.0, -0.5, 10.0, -0.25))
        w.write(np.zeros((2, 3), np.uint8), 2, (0, 0))
        assert r.wait(0).axes == (50.0, -0.5, 10.0, -0.25)
        assert r.wait(0).axes is None  # uncalibrated: pixel numbers
