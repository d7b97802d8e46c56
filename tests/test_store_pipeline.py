"""The store pipeline: real store processes writing real HDF5 files from a real ring (written by
tests/ringproc.py) or a real bsread stream, read back with h5py + hdf5plugin."""

from __future__ import annotations

import json
import signal
import struct
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import bitshuffle
import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter for reading)
import numpy as np
import pytest
from ringproc import pattern, timestamp
from supervisor_harness import SIM_CAMERA, wait_for
from worker_harness import WorkerProcess

from shmcam.bsread import Compressed, Decoder, Encoder, Sender
from shmcam.bsread.compression import compress
from shmcam.shm import StatsBlock, ring_base, segment, stats_name
from shmcam.workers import store_path
from shmcam.workers.h5file import LayoutChange, StoreFile

# `python -m shmcam.workers pipeline`, as the supervisor starts it, after a prelude.
LAUNCHER = """
import runpy, sys
{prelude}
sys.argv = ["shmcam.workers", "pipeline"]
runpy.run_module("shmcam.workers", run_name="__main__", alter_sys=True)
"""
DISK_FULL = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
"""


class StoreProcess(WorkerProcess):
    """A store instance process with its spec sent, reports and log collected."""

    def __init__(
        self, node: str, tmp: Path, config: dict, prelude: str = "", store_dir: Path | None = None
    ):
        config = {"pipeline_type": "store", **config}
        stream = config.get("input_stream")  # resolved into `input` as the supervisor does
        super().__init__(
            [sys.executable, "-c", LAUNCHER.format(prelude=prelude)],
            {
                "node": node,
                "ring": None if stream else ring_base(node, "cam"),
                "input": stream
                and {"stream": stream, "stream2": None, "mode": config.get("input_mode") or "SUB"},
                "stats": stats_name(node, "p-store"),
                "port": 0,
                "config": config,
                "instance_id": "store1",
                "store_dir": str(store_dir or tmp / "store"),
                "scripts_dir": str(tmp / "scripts"),
                "backgrounds_dir": str(tmp / "backgrounds"),
            },
        )

    def ready(self) -> Path:
        return Path(self.wait_report("ready")["output_file"])

    def counters(self) -> dict:
        with StatsBlock(self.spec["stats"]) as stats:
            return stats.snapshot()

    def wait_counter(self, field: str, at_least: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.counters()[field] < at_least:
            assert time.monotonic() < deadline, f"{field} stayed below {at_least}: {self.log[-5:]}"
            assert self.process.poll() is None, f"store ended early: {self.log[-10:]}"
            time.sleep(0.05)

    def kill(self) -> None:
        """Kill the process if it still runs, and remove the statistics block it then left."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
            segment.unlink(self.spec["stats"])
        self.process.stdout.close()
        self.control.close()


@pytest.fixture
def stores(node, tmp_path):
    """Start store processes: `stores(config, ...)`; all killed at the end."""
    started: list[StoreProcess] = []

    def start(config: dict, **kwargs) -> StoreProcess:
        store = StoreProcess(node, tmp_path, config, **kwargs)
        started.append(store)
        return store

    yield start
    for store in started:
        store.kill()


@pytest.fixture
def sockets():
    """bsread senders of a test, closed at the end."""
    opened: list[Sender] = []

    def open_sender(**options) -> Sender:
        sender = Sender("tcp://127.0.0.1:0", linger=0, **options)
        opened.append(sender)
        return sender

    yield open_sender
    for sender in opened:
        sender.close()


def writer(procs, node: str, *args: str):
    """A ring writer process (tests/ringproc.py) attached and waiting for "go"."""
    proc = procs.start("writer", ring_base(node, "cam"), *args)
    procs.expect(proc, "ready")
    return proc


def channel(f: h5py.File, name: str) -> dict:
    group = f["data"][name]
    return {key: group[key][()] for key in group}


def assert_closed_cleanly(f: h5py.File, end: str, sparse: tuple[str, ...] = ()) -> int:
    """Every channel has one row per record (a `sparse` one, None in some records, from the
    first record that had a value); the records and the end are noted."""
    records = int(f["general"].attrs["records"])
    assert end in f["general"].attrs["end_reason"]
    for name, group in f["data"].items():
        lengths = {key: len(group[key]) for key in group}
        assert len(set(lengths.values())) == 1, (name, lengths)
        if name in sparse:
            assert 0 < lengths["pulse_id"] <= records, (name, lengths)
        else:
            assert set(lengths.values()) == {records}, (name, lengths)
    return records


# --- from the camera ring -------------------------------------------------------------------


def test_ring_frames_stored_pixel_exact_until_records(procs, stores, node):
    """`records` ends the run: the file is closed, the end reported, exit code 0. Each frame
    is pixel-exact with its pulse id, compressed as bsread does, one frame per chunk."""
    ring = writer(
        procs,
        node,
        "--frames",
        "200",
        "--rate",
        "100",
        "--shapes",
        "48x64:u2",
        "--slots",
        "32",
        "--hold",
    )
    store = stores({"camera_name": "cam", "records": 25})
    path = store.ready()
    assert path.parent == Path(store.spec["store_dir"]) / "store1" and path.suffix == ".h5"
    procs.go(ring)
    assert store.wait_report("finished") == "25 records sent"
    assert store.wait() == 0
    assert any(str(path) in line for line in store.log)

    with h5py.File(path, "r") as f:
        assert assert_closed_cleanly(f, "25 records sent") == 25
        general = f["general"].attrs
        assert general["layout"] == "shmcam-store/1" and general["instance_id"] == "store1"
        assert json.loads(general["config"])["records"] == 25
        assert set(f["data"]) == {"width", "height", "timestamp", "image", "x_axis", "y_axis"}
        image = f["data/image/data"]
        assert image.chunks == (1, 48, 64) and image.dtype == np.dtype("<u2")
        assert "32008" in image._filters  # bitshuffle, readable through hdf5plugin
        pulse_ids = f["data/image/pulse_id"][()]
        assert (np.diff(pulse_ids) > 0).all()
        stamps = zip(f["data/image/timestamp"][()], f["data/image/timestamp_offset"][()])
        for row, (pid, stamp) in enumerate(zip(pulse_ids, stamps)):
            frame = pattern("ramp", (48, 64), np.dtype("u2"), pid - 1000)
            assert np.array_equal(image[row], frame), f"row {row}, pulse id {pid}"
            assert tuple(stamp) == timestamp(pid - 1000)
            assert image.id.read_direct_chunk((row, 0, 0))[1] == compress(frame, "bitshuffle_lz4")
        assert f["data/image/is_data_present"][()].all()
        assert (f["data/width/data"][()] == 64).all() and (f["data/height/data"][()] == 48).all()
        assert np.array_equal(f["data/x_axis/data"][0], np.arange(64, dtype=np.float32))
        assert np.array_equal(f["data/width/pulse_id"][()], pulse_ids)
    ring.stdin.write("done\n")
    ring.stdin.flush()
    assert procs.result(ring)["written"] == 200


def test_sigterm_mid_run_leaves_a_valid_file(procs, stores, node):
    ring = writer(procs, node, "--frames", "200", "--rate", "200", "--shapes", "24x32:u1")
    store = stores({"camera_name": "cam"})
    path = store.ready()
    procs.go(ring)
    store.wait_counter("frames_out", 5)
    store.process.send_signal(signal.SIGTERM)
    assert store.wait() == 0
    procs.result(ring)
    with h5py.File(path, "r") as f:
        assert assert_closed_cleanly(f, "stopped") >= 5
        for row, pid in enumerate(f["data/image/pulse_id"][()]):
            expected = pattern("ramp", (24, 32), np.dtype("u1"), pid - 1000)
            assert np.array_equal(f["data/image/data"][row], expected)


def test_flushed_file_readable_during_the_run_and_after_a_crash(procs, stores, node):
    """Flushed once a second: while paused (a live config update) a reader sees the frames
    so far, and a killed store leaves them readable."""
    ring = writer(procs, node, "--frames", "150", "--rate", "100", "--shapes", "24x32:u1")
    store = stores({"camera_name": "cam"})
    path = store.ready()
    procs.go(ring)
    store.wait_counter("frames_out", 5)
    store.send({"config": {"camera_name": "cam", "pause": True}})

    def flushed_rows() -> int:
        try:
            with h5py.File(path, "r", locking=False) as f:
                return len(f["data/image/pulse_id"])
        except (OSError, KeyError):
            return 0

    deadline = time.monotonic() + 10
    while flushed_rows() != (written := store.counters()["frames_out"]):  # paused: stable
        assert time.monotonic() < deadline, f"the file never showed the stored frames: {store.log}"
        time.sleep(0.1)
    assert written >= 5
    store.kill()
    with h5py.File(path, "r") as f:
        pulse_ids = f["data/image/pulse_id"][()]
        assert len(pulse_ids) == written and "end_reason" not in f["general"].attrs
        for row, pid in enumerate(pulse_ids):
            expected = pattern("ramp", (24, 32), np.dtype("u1"), pid - 1000)
            assert np.array_equal(f["data/image/data"][row], expected)
    procs.result(ring)


def test_overwritten_frames_are_never_written(procs, stores, node):
    """A writer on a 2-slot ring laps the store: what is written is still exact."""
    ring = writer(
        procs,
        node,
        "--frames",
        "500",
        "--rate",
        "1000",
        "--slots",
        "2",
        "--pattern",
        "flat",
        "--shapes",
        "960x1280:u1",
    )
    store = stores({"camera_name": "cam"})
    path = store.ready()
    procs.go(ring)
    assert procs.result(ring)["written"] == 500
    store.wait_counter("frames_out", 1)
    counters = store.counters()
    assert store.stop() == 0
    assert counters["frames_out"] + counters["torn"] <= counters["frames_in"], counters
    with h5py.File(path, "r") as f:
        rows = assert_closed_cleanly(f, "stopped")
        assert rows >= counters["frames_out"] > 0
        for row, pid in enumerate(f["data/image/pulse_id"][()]):
            image = f["data/image/data"][row]
            assert (image == (pid - 1000) % 251 + 1).all(), f"torn frame {pid} was written"


def test_geometry_change_ends_the_run_cleanly(procs, stores, node):
    ring = writer(procs, node, "--frames", "40", "--rate", "100", "--shapes", "16x16:u2,8x24:u2")
    store = stores({"camera_name": "cam"})
    path = store.ready()
    procs.go(ring)
    reason = store.wait_report("finished")
    assert "'image' changed from uint16 of shape (16, 16) to uint16 of shape (8, 24)" in reason
    assert store.wait() == 0
    with h5py.File(path, "r") as f:
        rows = assert_closed_cleanly(f, "changed")
        assert 0 < rows <= 20 and f["data/image/data"].shape == (rows, 16, 16)
    procs.result(ring)


def test_pid_range_bounds_the_run(procs, stores, node):
    ring = writer(
        procs, node, "--frames", "60", "--rate", "100", "--shapes", "8x8:u2", "--slots", "64"
    )  # no frame missed even by a store held up for 0.5 s
    store = stores({"camera_name": "cam", "pid_range": [1010, 1020]})
    path = store.ready()
    procs.go(ring)
    assert store.wait_report("finished") == "pid_range end 1020 reached"
    assert store.wait() == 0
    with h5py.File(path, "r") as f:
        assert list(f["data/image/pulse_id"][()]) == list(range(1010, 1021))
    procs.result(ring)


# --- from a bsread stream --------------------------------------------------------------------


def odd_blob(image: np.ndarray) -> bytes:
    """A valid bitshuffle_lz4 part with 4096-byte blocks: our own compression (8192-byte
    blocks) never produces these bytes, so finding them in the file proves they were not
    recompressed."""
    elems = 4096 // image.itemsize
    body = bitshuffle.compress_lz4(image.reshape(-1), elems).tobytes()
    return struct.pack(">qi", image.nbytes, 4096) + body


def test_stream_bitshuffle_images_stored_as_sent(stores, sockets):
    """A PUB stream with bitshuffle_lz4 images: each image part becomes its HDF5 chunk byte for
    byte; the other channels are stored as values, None as no data."""
    sender = sockets(mode="PUB")
    store = stores({"camera_name": "cam", "input_stream": sender.address, "records": 12})
    path = store.ready()
    assert sender.wait_for_clients(1, 10)
    encoder = Encoder("bitshuffle_lz4")
    rng = np.random.default_rng(1)
    sent: dict[int, tuple[np.ndarray, bytes]] = {}
    pid = 5000
    while store.process.poll() is None:
        pid += 1
        image = rng.integers(0, 4000, (30, 40), dtype=np.uint16)
        parts = encoder.encode(
            {
                "image": image,
                "x_axis": np.arange(40, dtype=np.float32),
                "intensity": int(image.sum()),
                "note": f"pulse {pid}",
                "maybe": None if pid % 3 else 1.5,
            },
            pid,
            (1_700_000_000, pid),
        )
        if pid % 2:
            parts[2] = odd_blob(image)
        sent[pid] = (image, bytes(parts[2]))
        sender.send_parts(parts)
        time.sleep(0.01)
        assert pid < 5000 + 1000, f"the store never finished; log: {store.log[-5:]}"
    assert store.wait_report("finished") == "12 records sent"
    assert store.wait() == 0

    with h5py.File(path, "r") as f:
        assert assert_closed_cleanly(f, "12 records sent", sparse=("maybe",)) == 12
        images = f["data/image/data"]
        pulse_ids = f["data/image/pulse_id"][()]
        assert list(pulse_ids) == list(range(pulse_ids[0], pulse_ids[0] + 12))
        assert any(p % 2 for p in pulse_ids) and any(not p % 2 for p in pulse_ids)
        for row, pid in enumerate(pulse_ids):
            image, blob = sent[pid]
            assert images.id.read_direct_chunk((row, 0, 0)) == (0, blob)
            assert np.array_equal(images[row], image)
        assert list(f["data/image/timestamp_offset"][()]) == list(pulse_ids)
        intensity = channel(f, "intensity")
        assert list(intensity["data"]) == [int(sent[p][0].sum()) for p in pulse_ids]
        assert [s.decode() for s in f["data/note/data"][()]] == [f"pulse {p}" for p in pulse_ids]
        # "maybe" exists from its first value on; rows without a value are marked absent
        maybe = channel(f, "maybe")
        first = next(row for row, p in enumerate(pulse_ids) if not p % 3)
        assert list(maybe["pulse_id"]) == list(pulse_ids[first:])
        assert list(maybe["is_data_present"]) == [int(not p % 3) for p in pulse_ids[first:]]
        assert list(maybe["data"][maybe["is_data_present"] == 1]) == [1.5] * sum(
            not p % 3 for p in pulse_ids[first:]
        )


def test_stream_plain_images_are_compressed_into_chunks(stores, sockets):
    """A PUSH stream without compression (input_mode PULL): images are stored bitshuffled."""
    sender = sockets(mode="PUSH", block=True, send_timeout=10)
    store = stores(
        {"camera_name": "cam", "input_stream": sender.address, "input_mode": "PULL", "records": 5}
    )
    path = store.ready()
    images = [np.full((20, 30), i, np.int32) - 7 for i in range(5)]
    for i, image in enumerate(images):
        assert sender.send({"image": image}, 100 + i, 1_700_000_000.5)
    assert store.wait_report("finished") == "5 records sent"
    assert store.wait() == 0
    with h5py.File(path, "r") as f:
        data = f["data/image/data"]
        assert data.dtype == np.dtype("<i4") and "32008" in data._filters
        assert np.array_equal(data[()], np.stack(images))
        assert list(f["data/image/pulse_id"][()]) == [100, 101, 102, 103, 104]
        assert list(f["data/image/timestamp_offset"][()]) == [500_000_000] * 5


# --- through the supervisor ------------------------------------------------------------------


def test_store_pipelines_started_through_the_supervisor(supervisor):
    """A store of the camera's ring, and one of a processing pipeline's compressed stream (a
    cascade), each ending after `records`, their files where the instance info says."""
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    sup.call(
        "POST",
        "/api/v1/pipeline",
        params={"instance_id": "proc"},
        json={"camera_name": "sim", "data_compression": True, "no_client_timeout": 0},
    )
    for instance_id, config in (
        ("frames", {"camera_name": "sim"}),
        ("results", {"input_pipeline": "proc"}),
    ):
        sup.call(
            "POST",
            "/api/v1/pipeline",
            params={"instance_id": instance_id},
            json={**config, "pipeline_type": "store", "records": 8},
        )

    files = {}
    for instance_id in ("frames", "results"):
        report = wait_for(lambda i=instance_id: sup.ended(i), what=f"{instance_id} to finish")
        files[instance_id] = Path(report["output_file"])
        assert (report["exitcode"], report["finished"]) == (0, "8 records sent"), report
        assert files[instance_id].parent == sup.data_dir / "store" / instance_id
    with h5py.File(files["frames"], "r") as f:
        assert assert_closed_cleanly(f, "8 records sent") == 8
        assert f["data/image/data"].shape == (8, 240, 320)
        assert f["general"].attrs["camera_name"] == "sim"
        assert (np.diff(f["data/image/pulse_id"][()]) > 0).all()
    with h5py.File(files["results"], "r") as f:
        assert assert_closed_cleanly(f, "8 records sent") == 8
        assert {"image", "x_profile", "intensity", "processing_parameters"} <= set(f["data"])
        images, profiles = f["data/image/data"][()], f["data/x_profile/data"][()]
        assert images.shape == (8, 240, 320)
        assert np.array_equal(images.sum(axis=1), profiles)  # the stream's own x_profile


# --- bad names, unwritable directories, full disks ------------------------------------------


def test_output_file_rule():
    for good in ("{instance_id}/{time}.h5", "run_1/cam:1.hdf5", "a+b-c.h5"):
        assert store_path.check_output_file(good) == good
    for bad in (
        "../x.h5",
        "/abs.h5",
        "a/../x.h5",
        "a/.hidden.h5",
        "x.txt",
        "{user}.h5",
        "a//b.h5",
        "a\\b.h5",
        "",
        3,
        "/".join("a" * 9) + ".h5",
    ):
        with pytest.raises(ValueError, match="output_file"):
            store_path.check_output_file(bad)


def test_output_file_stays_in_the_store(tmp_path):
    store = tmp_path / "store"
    (store / "out").mkdir(parents=True)
    (store / "out" / "link").symlink_to(tmp_path)
    start = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert (
        store_path.run_path(store, None, "cam1", start)
        == store / "cam1" / "20240506_070809_123456.h5"
    )
    with pytest.raises(ValueError, match="leads out of the store"):
        store_path.run_path(store, "out/link/x.h5", "cam1", start)
    with pytest.raises(ValueError, match="invalid output_file"):
        store_path.run_path(store, None, "../cam1", start)


def test_bad_output_file_refused_by_the_worker(stores, tmp_path):
    store = stores(
        {"camera_name": "cam", "input_stream": "tcp://127.0.0.1:1", "output_file": "../escape.h5"}
    )
    error = store.wait_report("error")
    assert "invalid output_file '../escape.h5'" in error
    assert store.wait() == 1
    assert not (tmp_path / "escape.h5").exists() and not (tmp_path / "store").exists()


def test_an_existing_file_is_never_overwritten(stores, tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "fixed.h5").write_bytes(b"precious")
    store = stores(
        {"camera_name": "cam", "input_stream": "tcp://127.0.0.1:1", "output_file": "fixed.h5"}
    )
    assert "exists: a store never overwrites a file" in store.wait_report("error")
    assert store.wait() == 1
    assert (tmp_path / "store" / "fixed.h5").read_bytes() == b"precious"


def test_unwritable_store_directory(stores, tmp_path):
    (tmp_path / "plain_file").write_text("not a directory")
    store = stores(
        {"camera_name": "cam", "input_stream": "tcp://127.0.0.1:1"},
        store_dir=tmp_path / "plain_file" / "store",
    )
    error = store.wait_report("error")
    assert "plain_file" in error and "Not a directory" in error
    assert store.wait() == 1


def test_too_little_free_space_refuses_to_start(stores, tmp_path):
    store = stores({"camera_name": "cam", "input_stream": "tcp://127.0.0.1:1", "min_free_mb": 1e12})
    assert "less than min_free_mb 1e+12" in store.wait_report("error")
    assert store.wait() == 1
    assert not (tmp_path / "store").exists()


def test_free_space_guard_ends_the_run_with_a_valid_file(procs, stores, node):
    """Once less than min_free_mb is left (here: raised live), the file is closed cleanly."""
    ring = writer(procs, node, "--frames", "200", "--rate", "200", "--shapes", "24x32:u1")
    store = stores({"camera_name": "cam"})
    path = store.ready()
    procs.go(ring)
    store.wait_counter("frames_out", 5)
    store.send({"config": {"camera_name": "cam", "min_free_mb": 1e12}})
    error = store.wait_report("error")
    assert error.startswith(f"{path}: only ") and "less than min_free_mb 1e+12" in error
    assert store.wait() == 1
    with h5py.File(path, "r") as f:
        records = assert_closed_cleanly(f, "failed: only ")
        assert records >= 5 and f["data/image/data"].shape == (records, 24, 32)
    procs.result(ring)


def test_failing_writes_end_the_run_with_one_error(stores, sockets):
    """Writes beyond the file size limit fail as on a full disk: one error report, exit 1."""
    sender = sockets(mode="PUSH", block=True, send_timeout=1)
    store = stores(
        {"camera_name": "cam", "input_stream": sender.address, "input_mode": "PULL"},
        prelude=DISK_FULL.format(limit=1 << 20),
    )
    path = store.ready()
    rng = np.random.default_rng(2)
    for pid in range(40):  # 40 incompressible 128 kB frames: 5 MB > 1 MB
        if not sender.send({"image": rng.integers(0, 1 << 16, (256, 256), np.uint16)}, pid, 0.0):
            break
        if store.process.poll() is not None:
            break
    error = store.wait_report("error")
    assert error.startswith(f"{path}: ") and error.endswith("File too large"), error
    assert store.wait() == 1, store.log
    assert sum("ERROR" in line for line in store.log) <= 2, store.log


# --- the codec and file layers on their own -------------------------------------------------


def test_decoder_keeps_chosen_compressed_channels_as_they_arrived():
    image = np.arange(600, dtype=">u2").reshape(20, 30)
    parts = Encoder("bitshuffle_lz4").encode(
        {"image": image, "profile": np.arange(30.0), "n": 3}, 7, (1, 2)
    )
    wanted = []
    decoder = Decoder(
        raw=lambda name, shape, codec: wanted.append((name, shape, codec)) or name == "image"
    )
    message = decoder.decode(parts)
    raw = message.data["image"]
    assert isinstance(raw, Compressed) and raw.codec == "bitshuffle_lz4"
    assert raw.data.obj is parts[2] and bytes(raw.data) == parts[2]  # the part itself
    assert np.shares_memory(np.frombuffer(raw.data, np.uint8), np.frombuffer(parts[2], np.uint8))
    assert raw.dtype == np.dtype(">u2") and raw.shape == (20, 30)
    assert np.array_equal(message.data["profile"], np.arange(30.0)) and message.data["n"] == 3
    assert wanted == [("image", (20, 30), "bitshuffle_lz4"), ("profile", (30,), "bitshuffle_lz4")]
    decoder.decode(parts)
    assert len(wanted) == 2  # asked once per data header, not per message

    broken = list(parts)
    broken[2] = bytes(parts[2][:12]) + b"\xff\xff\xff\xff" + bytes(parts[2][16:])
    message = decoder.decode(broken)
    assert message.data["image"] is None and "block 0 claims" in message.errors["image"]
    plain = Decoder(raw=lambda *_: True).decode(Encoder().encode({"image": image}, 1, 0.0))
    assert isinstance(plain.data["image"], np.ndarray)  # nothing compressed to keep
    lz4_parts = Encoder("lz4").encode({"image": image}, 1, 0.0)
    kept = Decoder(raw=lambda *_: True).decode(lz4_parts).data["image"]
    assert kept.codec == "lz4" and bytes(kept.data) == bytes(lz4_parts[2])


def test_file_layer_records_are_whole(tmp_path):
    """A record that does not fit leaves no trace; channel names cannot make paths."""
    f = StoreFile(tmp_path / "x.h5", {"run": "test"})
    image = np.ones((4, 8), np.uint16)
    f.write(f.prepare(1, (10, 0), {"image": image, "a/b": 1, ".": "dot", "n": None}))
    with pytest.raises(LayoutChange, match="'image' changed from uint16 of shape"):
        f.prepare(2, (11, 0), {"a/b": 2, "image": np.ones((4, 9), np.uint16)})
    with pytest.raises(LayoutChange, match="'a/b' changed from int64"):
        f.prepare(2, (11, 0), {"a/b": 2.5})
    f.write(f.prepare(3, (12, 0), {"image": image * 3, "a/b": np.uint8(7)}))
    f.close("done")
    with h5py.File(tmp_path / "x.h5", "r") as h:
        assert sorted(h["data"]) == ["%2E", "a%2Fb", "image"]
        assert list(h["data/a%2Fb/data"][()]) == [1, 7] and h["general"].attrs["run"] == "test"
        assert list(h["data/image/pulse_id"][()]) == [1, 3]
        assert list(h["data/%2E/is_data_present"][()]) == [1, 0]
        assert np.array_equal(h["data/image/data"][()], np.stack([image, image * 3]))
