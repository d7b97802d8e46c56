"""The C API (include/shmcam/) against the Python side, built with the real gcc: records a
Python writer wrote read from C, records a C writer wrote read from Python, the statistics
block bumped from C, and the memory ordering under ThreadSanitizer."""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from shmcam.shm import (
    RecordReader,
    RecordWriter,
    StatsBlock,
    create_record_ring,
    generations,
    layout,
    remove_ring,
    ring_base,
    stats_name,
)
from shmcam.shm.stats import _bucket

C = Path(__file__).parent / "c"
INCLUDE = Path(__file__).resolve().parents[1] / "include" / "shmcam"


def parse_records(lines: list[str]) -> list[dict]:
    """The C reader's output (tests/c/records_reader.c) as one dict per record."""
    records = []
    for line in lines:
        if line.startswith("record "):
            index, pulse, sec, ns, fmt, count = (int(v) for v in line.split()[1:])
            records.append(
                {"index": index, "pulse": pulse, "ts": (sec, ns), "format": fmt, "channels": {}}
            )
        elif line.startswith("find "):
            records[-1]["find"] = int(line.split()[-1])
        elif line in ("intact", "torn"):
            records[-1]["intact"] = line == "intact"
        else:
            name, type_name, ndim, d0, d1, d2, value = line.split(" ", 6)
            records[-1]["channels"][name] = (
                type_name,
                int(ndim),
                (int(d0), int(d1), int(d2)),
                value,
            )
    return records


def expected_channel(value) -> tuple:
    """What the C reader prints for a value written from Python: type, ndim, shape, value."""
    if value is None:
        return ("null", 0, (0, 0, 0), "-")
    if isinstance(value, str):
        return ("string", 0, (0, 0, 0), value)
    array = np.asarray(value)
    code = next(
        code
        for code, (_, numpy_code) in enumerate(layout.RECORD_TYPES)
        if numpy_code and code != layout.TYPE_STRING and np.dtype(numpy_code) == array.dtype
    )
    shape = array.shape + (0,) * (3 - array.ndim)
    return (layout.RECORD_TYPES[code][0], array.ndim, shape, array)


def test_c_reads_records_written_by_python(node, cc):
    exe = cc(C / "records_reader.c")
    base = ring_base(node, "pipe", "out")
    rng = np.random.default_rng(1)
    first = {
        "centroid": 12.25,
        "count": -7,
        "valid": True,
        "level": np.uint16(65535),
        "profile": rng.normal(size=300),
        "image": rng.integers(0, 65535, (20, 30), dtype=np.uint16),
        "cube": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        "signed": np.array([-(2**40), 5], np.int64),
        "status": "beam on, µrad",
        "fit": None,
    }
    second = {**first, "centroid": 13.5, "status": "a longer status line", "valid": False}
    third = {"profile": np.arange(100_000, dtype=np.float64)}  # outgrows the slots
    with RecordWriter(base, slots=4, capacity=8192) as w:
        reader = subprocess.Popen([str(exe), base, "3"], stdout=subprocess.PIPE, text=True)
        try:
            assert reader.stdout.readline().strip() == "ready"
            for pulse_id, channels in enumerate((first, second, third)):
                w.write(100 + pulse_id, (1_700_000_000, pulse_id), channels)
            out, _ = reader.communicate(timeout=20)
        finally:
            if reader.poll() is None:
                reader.kill()
        assert reader.returncode == 0 and w.generation == 1
    records = parse_records(out.splitlines())
    assert [r["pulse"] for r in records] == [100, 101, 102]
    assert [r["ts"] for r in records] == [(1_700_000_000, i) for i in range(3)]
    assert all(r["intact"] for r in records)
    # the same channel set keeps its format, whatever its strings; another set gets another
    assert records[0]["format"] == records[1]["format"] != records[2]["format"]
    assert [r["find"] for r in records] == [list(first).index("profile"), 4, 0]
    for record, sent in zip(records, (first, second, third)):
        assert list(record["channels"]) == list(sent)
        for name, value in sent.items():
            type_name, ndim, shape, printed = record["channels"][name]
            want_type, want_ndim, want_shape, want = expected_channel(value)
            assert (type_name, ndim, shape) == (want_type, want_ndim, want_shape), name
            if isinstance(want, str):
                assert printed == want, name
            elif want.dtype.kind == "f":
                assert float(printed) == pytest.approx(float(want.sum(dtype=np.float64)), rel=1e-12)
            else:
                assert int(printed) == int(want.astype(object).sum()), name


def test_python_reads_records_written_by_c_and_its_statistics(node, cc):
    exe = cc(C / "records_writer.c")
    base = ring_base(node, "ext", "out")
    create_record_ring(base, slots=6, capacity=512)  # as the supervisor does
    with StatsBlock(stats_name(node, "ext"), create=True) as stats, RecordReader(base) as r:
        out = subprocess.run(
            [str(exe), base, "5", "3000", stats.name], capture_output=True, text=True, timeout=20
        )
        assert out.returncode == 0, out.stderr
        slots, capacity, generation = (int(v) for v in out.stdout.split())
        # the C writer took the ring's 6 slots, replaced it (g1), and grew for 24 kB (g2)
        assert (slots, generation) == (6, 2) and capacity >= 3000 * 8
        assert generations(base) == [2]
        records = [r.wait(1) for _ in range(5)]
        assert r.missed == 0 and r.invalid == 0 and all(r.validate(x) for x in records)
        for i, record in enumerate(records):
            assert (record.index, record.pulse_id, record.timestamp) == (
                i,
                5000 + i,
                (1_700_000_000 + i, 250 * i),
            )
            data = record.data
            assert list(data) == [
                "index", "flag", "ratio", "big", "profile", "grid", "missing", "bytes", "text"
            ]  # fmt: skip
            assert data["index"] == i and isinstance(data["index"], np.int64)
            assert data["flag"] == bool(i % 2) and isinstance(data["flag"], np.bool_)
            assert data["ratio"] == np.float32(0.5 * i) and isinstance(data["ratio"], np.float32)
            assert data["big"] == np.uint64(2**64 - 1 - i)
            assert np.array_equal(data["profile"], np.arange(3000) * 0.25 + i)
            assert data["grid"].dtype == np.int16
            assert np.array_equal(data["grid"], [[1, 2, 3], [4, 5, -i]])
            assert data["missing"] is None
            assert np.array_equal(data["bytes"], np.arange(i, i + 4, dtype=np.uint8))
            assert data["text"] == f"record {i} of 5"
        snap = stats.snapshot()
        assert (snap["frames_in"], snap["errors"]) == (5, 2)
        assert snap["proc_ns_total"] == sum(ms * 1_000_000 for ms in range(1, 101))
        assert snap["proc_ns_last"] == 100_000_000 and snap["updated_ns"] > 0
        # the C histogram is Python's (no libm in C: quarter octaves by comparison)
        expected = np.bincount([_bucket(ms * 1_000_000) for ms in range(1, 101)], minlength=96)
        assert [count for _, count in stats.histogram()] == expected.tolist()
    assert remove_ring(base) == [f"{base}.g2"]


def test_c_headers_mirror_layout_py(cc, tmp_path):
    """Type codes, their sizes and names, the statistics fields and the record structures of
    the C headers are layout.py's."""
    source = tmp_path / "dump.c"
    source.write_text(
        """
        #include <stdio.h>
        #include "shmcam/records.h"
        #include "shmcam/stats.h"
        #define OFF(type, field) printf(#type " " #field " %zu\\n", offsetof(type, field))
        int main(void) {
            for (int t = 0; t < SHMCAM_TYPE_COUNT; t++)
                printf("type %d %s %d\\n", t, shmcam_type_name[t], shmcam_type_size[t]);
            printf("stats %d %u\\n", SHMCAM_STAT_COUNT, SHMCAM_STATS_BUCKETS);
            OFF(shmcam_record_header, pulse_id); OFF(shmcam_record_header, publish_ns);
            OFF(shmcam_record_header, format); OFF(shmcam_record_header, table_offset);
            OFF(shmcam_record_header, channel_count); OFF(shmcam_record_header, table_nbytes);
            OFF(shmcam_record_entry, nbytes); OFF(shmcam_record_entry, shape);
            OFF(shmcam_record_entry, type); OFF(shmcam_record_entry, ndim);
            OFF(shmcam_record_entry, name_offset); OFF(shmcam_record_entry, name_nbytes);
            return 0;
        }
        """
    )
    lines = subprocess.run([str(cc(source))], capture_output=True, text=True).stdout.splitlines()
    types = [line.split()[1:] for line in lines if line.startswith("type ")]
    assert [(int(code), name) for code, name, _ in types] == [
        (code, name) for code, (name, _) in enumerate(layout.RECORD_TYPES)
    ]
    assert [int(size) for *_, size in types] == [
        0 if numpy_code is None else np.dtype(numpy_code).itemsize
        for _, numpy_code in layout.RECORD_TYPES
    ]
    assert f"stats {len(layout.STATS_FIELDS)} {layout.HIST_BUCKETS}" in lines
    offsets = {
        tuple(line.split()[:2]): int(line.split()[2])
        for line in lines
        if line.startswith("shmcam_")
    }

    def field_offsets(fmt: struct.Struct, names: list[str], start: int) -> dict:
        """Where each field of a little-endian struct starts (shape counts as one field)."""
        codes = re.findall(r"\d*[a-zA-Z]", fmt.format[1:])
        return {
            name: start + struct.calcsize("<" + "".join(codes[:k])) for k, name in enumerate(names)
        }

    meta = ["pulse_id", "ts_sec", "ts_ns", "publish_ns", "format", "table_offset",
            "channel_count", "table_nbytes"]  # fmt: skip
    entry = ["offset", "nbytes", "shape", "type", "ndim", "name_offset", "name_nbytes"]
    expected = {
        **{
            ("shmcam_record_header", k): v
            for k, v in field_offsets(layout.RECORD_META, meta, 8).items()
        },
        **{
            ("shmcam_record_entry", k): v
            for k, v in field_offsets(layout.RECORD_ENTRY, entry, 0).items()
        },
    }
    assert offsets == {key: expected[key] for key in offsets} and len(offsets) == 12
    block = re.search(r"enum shmcam_stat \{(.*?)\};", (INCLUDE / "stats.h").read_text(), re.S)
    enum = re.findall(r"^\s*SHMCAM_STAT_(\w+)", block.group(1), re.M)
    assert enum == [f.upper() for f in layout.STATS_FIELDS] + ["COUNT"]


TSAN = ("-O1", "-g", "-fsanitize=thread", "-Wno-tsan", "-pthread")


def run_threads(exe: Path, mode: str, base: str, records: int, env: dict | None = None):
    """Run tests/c/records_threads.c; its per-reader counters and ThreadSanitizer's report."""
    import os

    out = subprocess.run(
        [str(exe), mode, base, str(records), "3"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    counts = [
        dict(zip(line.split()[::2], map(int, line.split()[1::2])))
        for line in out.stdout.splitlines()
    ]
    return out.returncode, counts, out.stderr


def test_threadsanitizer_finds_no_race_between_a_c_writer_and_c_readers(node, cc):
    """A writer thread never lapping three reader threads, all through the header's functions
    on one mapping: every byte a reader takes from a record it accepted must happen-after the
    writer wrote it. TSan sees no race; with the header's acquire/release made relaxed (as the
    first ring.h's volatile accesses were), it reports the race: the check has teeth."""
    base = ring_base(node, "pipe", "out")
    returncode, counts, report = run_threads(
        cc(C / "records_threads.c", *TSAN), "paced", base, 3000
    )
    assert returncode == 0 and "ThreadSanitizer" not in report, report
    assert counts == [{"received": 3000, "torn": 0, "caught": 0, "bad": 0, "missed": 0}] * 3
    relaxed = cc(C / "records_threads.c", *TSAN, "-DSHMCAM_TEST_RELAXED")
    returncode, counts, report = run_threads(relaxed, "paced", base, 3000)
    assert returncode != 0 and "WARNING: ThreadSanitizer: data race" in report
    assert "content_ok" in report  # a reader's read of a payload the writer wrote


def test_c_readers_lapped_by_the_writer_never_accept_a_torn_record(node, cc, tmp_path):
    """Flat out over 2 slots, the writer tears records readers are checking: each one with
    wrong content must fail the intact check. Under TSan, with the readers' payload reads
    (racy by design) suppressed, the header's own reads of metadata and tables race with
    nothing: they are atomic."""
    base = ring_base(node, "pipe", "out")
    returncode, counts, report = run_threads(
        cc(C / "records_threads.c", "-pthread"), "lapping", base, 20000
    )
    assert returncode == 0, report
    assert sum(c["caught"] for c in counts) > 0, "the writer never tore a record being read"
    assert all(c["bad"] == 0 for c in counts), counts
    suppressions = tmp_path / "tsan.supp"
    suppressions.write_text("race:content_ok\n")
    tsan = cc(C / "records_threads.c", *TSAN)
    env = {"TSAN_OPTIONS": f"suppressions={suppressions}"}
    returncode, counts, report = run_threads(tsan, "lapping", base, 20000, env)
    assert returncode == 0 and "WARNING" not in report, report
    assert all(c["bad"] == 0 for c in counts) and sum(c["missed"] for c in counts) > 0
