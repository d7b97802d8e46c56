"""Record rings in Python: every channel type, formats that change, growth, bad input, and a
broken writer. Cross-process behaviour (order, laps, torn records, restarts) is tested with the
frame ring's tests in test_ring.py, which run on record rings too."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from shmcam.bsread.types import TYPE_CODES
from shmcam.shm import (
    RecordReader,
    RecordWriter,
    create_record_ring,
    generations,
    layout,
    remove_ring,
    ring_base,
    segment,
)


def every_type() -> dict:
    rng = np.random.default_rng(5)
    return {
        "flag": True,
        "count": -(2**62),
        "ratio": 0.125,
        "label": "Strahl µ-2",
        "numpy_text": np.str_("numpy's own str"),
        "empty": "",
        "missing": None,
        "u1": np.uint8(200),
        "i2": np.int16(-3),
        "f4": np.float32(1.5),
        "u8": np.uint64(2**64 - 1),
        "bits": np.array([True, False, True]),
        "profile": rng.normal(size=2560),
        "ints": np.arange(-5, 5, dtype=np.int32),
        "image": rng.integers(0, 4096, (48, 64), dtype=np.uint16),
        "cube": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        "big_endian": np.arange(6, dtype=">i4"),
        "listed": [1.0, 2.0, 3.5],
        "nothing": np.zeros(0, np.float64),
        "zero_d": np.array(7, np.int8),
    }


def assert_same(got: dict, sent: dict) -> None:
    assert list(got) == list(sent)  # the writer's order
    for name, value in sent.items():
        if value is None or isinstance(value, str):
            assert got[name] == value, name
            continue
        expected = np.asarray(value)
        if expected.ndim == 0:  # a numpy scalar of the value's own type
            assert isinstance(got[name], np.generic), name
        assert got[name].dtype == expected.dtype.newbyteorder("<"), name
        assert got[name].shape == expected.shape, name
        assert np.array_equal(got[name], expected), name


def test_every_channel_type_comes_back_as_written(node):
    base = ring_base(node, "pipe", "out")
    sent = every_type()
    with RecordWriter(base, slots=4) as w, RecordReader(base) as r:
        assert w.write(123, (1_700_000_000, 5), sent) == 0
        record = r.wait(1)
        assert (record.index, record.pulse_id, record.timestamp) == (0, 123, (1_700_000_000, 5))
        assert_same(record.data, sent)
        assert not record.data["image"].flags.writeable
        assert record.data["image"].base is not None  # a view into the slot, not a copy
        assert np.array_equal(record.image, sent["image"])
        assert r.validate(record)


def test_formats_that_change_and_recur_are_read_right_in_every_slot(node):
    """Slots keep the table of their last record: each record must come back with its own,
    whether its channel set is new, the previous one's, or one seen slots ago."""
    base = ring_base(node, "pipe", "out")
    formats = [
        lambda i: {"x": np.full(5, i, np.float64), "n": i, "s": "a" * (i % 7)},
        lambda i: {"x": np.full(5, i, np.float64), "n": None, "s": "b" * (i % 3)},
        lambda i: {"x": np.full(9, i, np.int16), "n": i, "s": str(i)},
        lambda i: {"n": float(i), "x": np.full((2, 2), i, np.uint8)},
        lambda i: {"only": f"record {i}"},
    ]
    with RecordWriter(base, slots=3) as w, RecordReader(base) as r:
        for i in range(60):
            sent = formats[(i * 7 // 3) % len(formats)](i)
            w.write(i, (0, i), sent)
            record = r.wait(0)
            assert record.pulse_id == i
            assert_same(record.data, sent)
            assert r.validate(record)


def test_a_record_larger_than_a_slot_opens_a_larger_generation(node):
    base = ring_base(node, "pipe", "out")
    with RecordWriter(base, slots=2, capacity=4096) as w, RecordReader(base) as r:
        w.write(1, (0, 0), {"x": np.ones(10)})
        w.write(2, (0, 0), {"x": np.arange(100_000, dtype=np.float64)})
        assert w.generation == 1 and w.capacity >= 800_000
        assert generations(base) == [1]  # the small generation is gone
        first, second = r.wait(0), r.wait(0)
        assert (first.pulse_id, second.pulse_id) == (1, 2)
        assert second.index == 1 and r.missed == 0  # numbering goes on in the new generation
        assert np.array_equal(second.data["x"], np.arange(100_000))
        assert r.validate(first) and r.validate(second)
        assert np.array_equal(first.data["x"], np.ones(10))  # the old slot is still mapped


@pytest.mark.parametrize(
    ("channels", "error", "match"),
    [
        ({"c": np.zeros(3, np.complex64)}, TypeError, "channel 'c': dtype complex64"),
        ({"c": np.zeros(3, np.float16)}, TypeError, "channel 'c': dtype float16"),
        ({"c": {"nested": 1}}, TypeError, "channel 'c': a dict cannot be stored"),
        ({"c": ["a", "b"]}, TypeError, "channel 'c': dtype <U1"),
        ({"c": 2**63}, ValueError, "channel 'c': 9223372036854775808 does not fit an int64"),
        ({"c": np.zeros((1, 1, 1, 1))}, ValueError, "channel 'c': shape"),
        ({"": 1.0}, TypeError, "non-empty strings"),
        ({5: 1.0}, TypeError, "non-empty strings"),
        ({"a\0b": 1.0}, TypeError, "without NUL"),
        ([("c", 1.0)], TypeError, "a mapping of names to values"),
    ],
)
def test_values_a_record_cannot_hold_are_refused_and_write_nothing(node, channels, error, match):
    base = ring_base(node, "pipe", "out")
    with RecordWriter(base, slots=2) as w, RecordReader(base) as r:
        w.write(1, (0, 0), {"c": 1.0})
        assert r.wait(0).data == {"c": 1.0}
        with pytest.raises(error, match=match):
            w.write(2, (0, 0), channels)
        assert w.records_written == 1 and r.wait(0) is None
        w.write(3, (0, 0), {"c": 2.0})  # the ring goes on
        assert r.wait(0).data == {"c": 2.0}


def test_pulse_id_beyond_int64_is_refused_before_the_slot_is_touched(node):
    base = ring_base(node, "pipe", "out")
    with RecordWriter(base, slots=2) as w, RecordReader(base) as r:
        w.write(1, (0, 0), {"c": 1.0})
        for pulse_id, timestamp in ((2**63, (0, 0)), (2, (0, -(2**63) - 1)), (2.5, (0, 0))):
            with pytest.raises(ValueError, match="pulse id and timestamp .* int64 integers"):
                w.write(pulse_id, timestamp, {"c": 2.0})
        assert r.latest().pulse_id == 1  # record 0 is intact, record 1 never started
        assert r.wait(0).pulse_id == 1


def corrupt_first_entry(name: str, **fields) -> None:
    """Overwrite fields of the channel table's first entry of slot 0, as a broken writer might."""
    mm, _ = segment.attach(name, writable=True)
    try:
        slot = layout.HEADER_SIZE
        *_, table_offset, _count, _nbytes = layout.RECORD_META.unpack_from(
            mm, slot + layout.OFF_RECORD_META
        )
        entry = list(layout.RECORD_ENTRY.unpack_from(mm, slot + table_offset))
        names = ["offset", "nbytes", "d0", "d1", "d2", "type", "ndim", "name_offset", "name_len"]
        for key, value in fields.items():
            entry[names.index(key)] = value
        layout.RECORD_ENTRY.pack_into(mm, slot + table_offset, *entry)
    finally:
        mm.close()


@pytest.mark.parametrize(
    "damage",
    [
        {"offset": 1 << 40},  # a payload outside the slot
        {"offset": 64 + 8},  # not aligned
        {"nbytes": 7},  # does not match the shape
        {"type": 99},
        {"ndim": 4},
        {"name_offset": 1 << 30},
        {"name_len": 1 << 20},
        {"d0": 2**32 - 1, "d1": 2**32 - 1, "d2": 2**32 - 1},  # a product beyond int64
    ],
)
def test_a_broken_table_is_counted_and_skipped_never_trusted(node, damage):
    base = ring_base(node, "pipe", "out")
    with RecordWriter(base, slots=2) as w, RecordReader(base) as r:
        w.write(1, (0, 0), {"x": np.arange(4.0), "s": "text"})
        corrupt_first_entry(w.name, **damage)
        assert r.wait(0) is None
        assert (r.invalid, r.missed) == (1, 1)
        w.write(2, (0, 0), {"x": np.arange(4.0), "s": "text"})  # slot 1: intact
        record = r.wait(0)
        assert record.pulse_id == 2 and np.array_equal(record.data["x"], np.arange(4.0))


def test_a_ring_made_for_another_writer_hands_over_slots_and_capacity(node):
    """The supervisor makes an external program's output ring; the program's writer takes
    its slot count and capacity, and readers attached early follow it."""
    base = ring_base(node, "ext", "out")
    name = create_record_ring(base, slots=5, capacity=1 << 20)
    assert name == f"{base}.g0"
    with RecordReader(base) as r:
        assert r.wait(0) is None and r.writer_alive()  # the creator, until a writer comes
        with RecordWriter(base) as w:
            assert (w.slots, w.capacity, generations(base)) == (5, 1 << 20, [1])
            w.write(7, (0, 0), {"v": 1})
            assert r.wait(1).pulse_id == 7 and r.name == f"{base}.g1"
            w.close(unlink=False)  # the program exits; the ring stays for the supervisor
            assert not r.writer_alive()
        assert remove_ring(base) == [f"{base}.g1"]
        assert generations(base) == [] and r.wait(0.05) is None


def test_latest_policy_and_snapshot(node):
    base = ring_base(node, "pipe", "out")
    with RecordWriter(base, slots=4) as w, RecordReader(base, policy="latest") as r:
        assert r.latest() is None
        for i in range(3):
            w.write(i, (0, 0), {"i": i})
        assert r.latest().data == {"i": 2}
        assert r.wait(0).pulse_id == 2 and r.missed == 2


def test_the_record_types_are_bsreads(node):
    """The record layout keeps its own type table (its codes are part of the binary layout);
    its names and numpy types must stay bsread's (shmcam/bsread/types.py)."""
    table = dict(layout.RECORD_TYPES)
    assert table.pop("null") is None
    assert table == TYPE_CODES
    assert [name for name, _ in layout.RECORD_TYPES].index("string") == layout.TYPE_STRING


def test_python_rings_refuse_cpus_other_than_x86_64():
    code = (
        "import platform; platform.machine = lambda: 'aarch64'\n"
        "try:\n    import shmcam.shm\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "x86-64 only, not aarch64" in out.stdout and "include/shmcam" in out.stdout
