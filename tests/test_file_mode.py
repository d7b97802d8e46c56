"""FILE mode (`"mode": "FILE"`): real pipeline processes writing real HDF5 files from a real
ring (written by tests/ringproc.py) or a real bsread stream, in CamServer's layouts and in
shmcam's, read back with h5py (+ hdf5plugin for compressed images) as their users read them."""

from __future__ import annotations

import json
import os
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
from shmcam.workers.h5file import CamServerFile, LayoutChange, StoreFile

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
FRAMES = {"function": "transparent", "mode": "FILE"}  # a camera's frames as they are


class FileProcess(WorkerProcess):
    """A FILE mode pipeline process with its spec sent, reports and log collected."""

    def __init__(
        self,
        node: str,
        tmp: Path,
        config: dict,
        prelude: str = "",
        store_dir: Path | None = None,
        number: int = 0,
    ):
        config = {"file": "{instance_id}/{time}.h5", **config}
        stream = config.get("input_stream")  # resolved into `input` as the supervisor does
        super().__init__(
            [sys.executable, "-c", LAUNCHER.format(prelude=prelude)],
            {
                "node": node,
                "ring": None if stream else ring_base(node, "cam"),
                "input": stream and {"stream": stream, "mode": config.get("input_mode") or "SUB"},
                "stats": stats_name(node, f"p-file{number}"),
                "port": 0,
                "config": config,
                "instance_id": "run1",
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
            assert self.process.poll() is None, f"pipeline ended early: {self.log[-10:]}"
            time.sleep(0.05)

    def error(self) -> str:
        """The error report (the instance ends with it)."""
        while True:
            report = self.reports.get(timeout=20)
            if "error" in report:
                return report["error"]

    def kill(self) -> None:
        """Kill the process if it still runs, and remove the statistics block it then left."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
            segment.unlink(self.spec["stats"])
        self.process.stdout.close()
        self.control.close()


@pytest.fixture
def files(node, tmp_path):
    """Start FILE mode pipeline processes: `files(config, ...)`; all killed at the end."""
    started: list[FileProcess] = []

    def start(config: dict, **kwargs) -> FileProcess:
        process = FileProcess(node, tmp_path, config, number=len(started), **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


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


def general(f: h5py.File, key: str):
    value = f["general"][key][()]
    return value.decode() if isinstance(value, bytes) else value


def assert_camserver_file(f: h5py.File, end: str, data="data", header="header") -> int:
    """CamServer's DEFAULT layout: a row per record in every dataset; the run noted."""
    records = len(f[f"{header}/pulse_id"])
    assert end in general(f, "end_reason") and general(f, "records") >= records
    assert f[f"{header}/global_timestamp"].shape == (records, 2)
    for name, group in f[data].items():
        assert len(group["value"]) == records, name
        assert group["timestamp"].shape == (records, 2) and group["timestamp"].dtype == np.uint64
    return records


def assert_closed_cleanly(f: h5py.File, end: str, sparse: tuple[str, ...] = ()) -> int:
    """shmcam's layout: every channel has one row per record (a `sparse` one, None in some
    records, from the first record that had a value); the records and the end are noted."""
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


def test_ring_frames_in_camserver_default_layout(procs, files, node):
    """CamServer's DEFAULT layout, as its users read it: /data/<ch>/value and timestamp,
    /header/pulse_id and global_timestamp, /general/... datasets. `records` fixes the
    datasets' size and ends the run (exit code 0). Images are uncompressed chunks written
    directly: plain h5py reads them, pixel-exact."""
    ring = writer(
        procs, node, "--frames", "200", "--rate", "100", "--shapes", "48x64:u2", "--slots", "32"
    )
    run = files({**FRAMES, "camera_name": "cam", "records": 25})
    path = run.ready()
    assert path.parent == Path(run.spec["store_dir"]) / "run1" and path.suffix == ".h5"
    procs.go(ring)
    assert run.wait_report("finished") == "25 records sent"
    assert run.wait() == 0
    assert any(str(path) in line for line in run.log)

    with h5py.File(path, "r") as f:
        assert assert_camserver_file(f, "25 records sent") == 25
        assert set(f["data"]) == {
            "image",
            "width",
            "height",
            "timestamp",
            "x_axis",
            "y_axis",
            "processing_parameters",
        }
        assert {"created", "user", "pid", "host", "datasets"} <= set(f["general"])
        datetime.strptime(general(f, "created"), "%d/%m/%Y %H:%M:%S.%f")  # CamServer's format
        assert general(f, "instance_id") == "run1" and general(f, "datasets") == 1
        assert json.loads(general(f, "config"))["records"] == 25
        image = f["data/image/value"]
        assert image.maxshape == (25, 48, 64) and image.chunks == (1, 48, 64)
        assert image.dtype == np.dtype("<u2") and not image._filters  # readable without plugins
        pulse_ids = f["header/pulse_id"][()]
        assert pulse_ids.dtype == np.uint64 and (np.diff(pulse_ids.astype(int)) > 0).all()
        for row, pid in enumerate(pulse_ids):
            frame = pattern("ramp", (48, 64), np.dtype("u2"), int(pid) - 1000)
            assert np.array_equal(image[row], frame), f"row {row}, pulse id {pid}"
            assert tuple(f["header/global_timestamp"][row]) == timestamp(int(pid) - 1000)
            assert tuple(f["data/image/timestamp"][row]) == timestamp(int(pid) - 1000)
            assert image.id.read_direct_chunk((row, 0, 0))[1] == frame.tobytes()
        assert (f["data/width/value"][()] == 64).all() and (f["data/height/value"][()] == 48).all()
        assert np.array_equal(f["data/x_axis/value"][0], np.arange(64, dtype=np.float32))
        assert f["data/processing_parameters/value"].dtype == np.dtype("S1000")
    procs.result(ring)


def test_ring_frames_in_shmcam_layout_compressed_as_bsread_does(procs, files, node):
    """The SHMCAM layout: each frame bitshuffle-compressed into its chunk, as bsread
    compresses it; per channel its pulse ids and timestamps."""
    ring = writer(
        procs, node, "--frames", "200", "--rate", "100", "--shapes", "48x64:u2", "--slots", "32"
    )
    run = files({**FRAMES, "camera_name": "cam", "records": 25, "layout": "SHMCAM"})
    path = run.ready()
    procs.go(ring)
    assert run.wait_report("finished") == "25 records sent"
    assert run.wait() == 0
    with h5py.File(path, "r") as f:
        assert assert_closed_cleanly(f, "25 records sent") == 25
        assert f["general"].attrs["layout"] == "shmcam-store/1"
        image = f["data/image/data"]
        assert image.chunks == (1, 48, 64) and "32008" in image._filters
        pulse_ids = f["data/image/pulse_id"][()]
        stamps = zip(f["data/image/timestamp"][()], f["data/image/timestamp_offset"][()])
        for row, (pid, stamp) in enumerate(zip(pulse_ids, stamps)):
            frame = pattern("ramp", (48, 64), np.dtype("u2"), pid - 1000)
            assert np.array_equal(image[row], frame), f"row {row}, pulse id {pid}"
            assert tuple(stamp) == timestamp(pid - 1000)
            assert image.id.read_direct_chunk((row, 0, 0))[1] == compress(frame, "bitshuffle_lz4")
        assert f["data/image/is_data_present"][()].all()
    procs.result(ring)


def test_flat_and_bsh5_layouts_and_localtime(procs, files, node):
    ring = writer(procs, node, "--frames", "100", "--rate", "200", "--shapes", "8x8:u1")
    flat = files({**FRAMES, "camera_name": "cam", "records": 5, "layout": "flat"})
    bsh5 = files(
        {**FRAMES, "camera_name": "cam", "records": 5, "layout": "BSH5", "localtime": False},
        store_dir=Path(flat.spec["store_dir"]) / "other",
    )
    paths = flat.ready(), bsh5.ready()
    procs.go(ring)
    assert flat.wait() == 0 and bsh5.wait() == 0
    with h5py.File(paths[0], "r") as f:
        assert {"image", "image_timestamp", "width", "width_timestamp"} <= set(f["data"])
        assert f["data/image"].shape == (5, 8, 8) and f["header/pulse_id"].shape == (5,)
        assert f["data/image_timestamp"].shape == (5, 2)
    with h5py.File(paths[1], "r") as f:
        assert f["image/data"].shape == (5, 8, 8) and f["pulse_id"].shape == (5,)
        assert "timestamp" not in f["image"] and f["global_timestamp"].shape == (5, 2)
        for row, pid in enumerate(f["pulse_id"][()]):
            assert np.array_equal(f["image/data"][row], pattern("ramp", (8, 8), "u1", pid - 1000))
    procs.result(ring)


def test_sigterm_mid_run_leaves_a_valid_file(procs, files, node):
    ring = writer(procs, node, "--frames", "200", "--rate", "200", "--shapes", "24x32:u1")
    run = files({**FRAMES, "camera_name": "cam"})
    path = run.ready()
    procs.go(ring)
    run.wait_counter("frames_out", 5)
    run.process.send_signal(signal.SIGTERM)
    assert run.wait() == 0
    procs.result(ring)
    with h5py.File(path, "r") as f:
        assert assert_camserver_file(f, "stopped") >= 5
        for row, pid in enumerate(f["header/pulse_id"][()]):
            expected = pattern("ramp", (24, 32), np.dtype("u1"), int(pid) - 1000)
            assert np.array_equal(f["data/image/value"][row], expected)


def test_flushed_file_readable_during_the_run_and_after_a_crash(procs, files, node):
    """Flushed once a second: while paused (a live config update) a reader sees the frames
    so far, and a killed pipeline leaves them readable."""
    ring = writer(procs, node, "--frames", "150", "--rate", "100", "--shapes", "24x32:u1")
    config = {**FRAMES, "camera_name": "cam"}
    run = files(config)
    path = run.ready()
    procs.go(ring)
    run.wait_counter("frames_out", 5)
    run.send({"config": {**run.spec["config"], "pause": True}})

    def flushed_rows() -> int:
        try:
            with h5py.File(path, "r", locking=False) as f:
                return len(f["header/pulse_id"])
        except (OSError, KeyError):
            return 0

    deadline = time.monotonic() + 10
    while flushed_rows() != (written := run.counters()["frames_out"]):  # paused: stable
        assert time.monotonic() < deadline, f"the file never showed the frames: {run.log}"
        time.sleep(0.1)
    assert written >= 5
    run.kill()
    with h5py.File(path, "r") as f:
        pulse_ids = f["header/pulse_id"][()]
        assert len(pulse_ids) == written and "end_reason" not in f["general"]
        for row, pid in enumerate(pulse_ids):
            expected = pattern("ramp", (24, 32), np.dtype("u1"), int(pid) - 1000)
            assert np.array_equal(f["data/image/value"][row], expected)
    procs.result(ring)


def test_overwritten_frames_are_never_written(procs, files, node):
    """A writer on a 2-slot ring laps the pipeline: what is written is still exact."""
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
    run = files({**FRAMES, "camera_name": "cam"})
    path = run.ready()
    procs.go(ring)
    assert procs.result(ring)["written"] == 500
    run.wait_counter("frames_out", 1)
    counters = run.counters()
    assert run.stop() == 0
    assert counters["frames_out"] + counters["torn"] <= counters["frames_in"], counters
    with h5py.File(path, "r") as f:
        rows = assert_camserver_file(f, "stopped")
        assert rows >= counters["frames_out"] > 0
        for row, pid in enumerate(f["header/pulse_id"][()]):
            image = f["data/image/value"][row]
            assert (image == (int(pid) - 1000) % 251 + 1).all(), f"torn frame {pid} was written"


def test_a_format_change_ends_the_run_unless_change(procs, files, node):
    """CamServer's "Data format changed": the run ends (error, exit code 1) with the file
    closed cleanly; with `change` the record opens /data1 and /header1 instead."""
    shapes = ("--frames", "40", "--rate", "100", "--shapes", "16x16:u2,8x24:u2", "--slots", "64")
    ring = writer(procs, node, *shapes, "--hold")  # the ring stays until both read it
    strict = files({**FRAMES, "camera_name": "cam"})
    changing = files(
        {**FRAMES, "camera_name": "cam", "change": True},
        store_dir=Path(strict.spec["store_dir"]) / "changing",
    )
    paths = strict.ready(), changing.ready()
    procs.go(ring)
    error = strict.error()
    assert "Data format changed: channel 'x_axis' changed from float32 of shape (16,)" in error
    assert strict.wait() == 1
    changing.wait_counter("frames_out", 39)
    assert changing.stop() == 0
    with h5py.File(paths[0], "r") as f:
        rows = assert_camserver_file(f, "failed: ")
        assert 0 < rows <= 20 and f["data/image/value"].shape == (rows, 16, 16)
    with h5py.File(paths[1], "r") as f:
        first = assert_camserver_file(f, "stopped")
        second = assert_camserver_file(f, "stopped", "data1", "header1")
        assert f["data/image/value"].shape[1:] == (16, 16)
        assert f["data1/image/value"].shape[1:] == (8, 24)
        assert first + second >= 39 and general(f, "datasets") == 2
        assert f["header1/pulse_id"][0] > f["header/pulse_id"][-1]
    ring.stdin.write("done\n")
    ring.stdin.flush()
    procs.result(ring)


def test_pid_range_bounds_the_run(procs, files, node):
    ring = writer(
        procs, node, "--frames", "60", "--rate", "100", "--shapes", "8x8:u2", "--slots", "64"
    )  # no frame missed even by a pipeline held up for 0.5 s
    run = files({**FRAMES, "camera_name": "cam", "pid_range": [1010, 1020]})
    path = run.ready()
    procs.go(ring)
    assert run.wait_report("finished") == "pid_range end 1020 reached"
    assert run.wait() == 0
    with h5py.File(path, "r") as f:
        assert list(f["header/pulse_id"][()]) == list(range(1010, 1021))
    procs.result(ring)


# --- from a bsread stream --------------------------------------------------------------------


def odd_blob(image: np.ndarray) -> bytes:
    """A valid bitshuffle_lz4 part with 4096-byte blocks: our own compression (8192-byte
    blocks) never produces these bytes, so finding them in the file proves they were not
    recompressed."""
    elems = 4096 // image.itemsize
    body = bitshuffle.compress_lz4(image.reshape(-1), elems).tobytes()
    return struct.pack(">qi", image.nbytes, 4096) + body


def test_stream_bitshuffle_images_stored_as_sent(files, sockets):
    """A stream pipeline passing a PUB stream into a file whose images are compressed: each
    bitshuffle_lz4 image part becomes its HDF5 chunk byte for byte (never decompressed);
    the other channels are stored as values, None as no data."""
    sender = sockets(mode="PUB")
    run = files(
        {
            "pipeline_type": "stream",
            "mode": "FILE",
            "layout": "SHMCAM",
            "input_stream": sender.address,
            "records": 12,
        }
    )
    path = run.ready()
    assert sender.wait_for_clients(1, 10)
    encoder = Encoder("bitshuffle_lz4")
    rng = np.random.default_rng(1)
    sent: dict[int, tuple[np.ndarray, bytes]] = {}
    pid = 5000
    while run.process.poll() is None:
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
        assert pid < 5000 + 1000, f"the run never finished; log: {run.log[-5:]}"
    assert run.wait_report("finished") == "12 records sent"
    assert run.wait() == 0

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
        assert list(f["data/intensity/data"][()]) == [int(sent[p][0].sum()) for p in pulse_ids]
        assert [s.decode() for s in f["data/note/data"][()]] == [f"pulse {p}" for p in pulse_ids]
        first = next(row for row, p in enumerate(pulse_ids) if not p % 3)
        assert list(f["data/maybe/pulse_id"][()]) == list(pulse_ids[first:])
        present = f["data/maybe/is_data_present"][()]
        assert list(present) == [int(not p % 3) for p in pulse_ids[first:]]
        assert list(f["data/maybe/data"][()][present == 1]) == [1.5] * int(present.sum())


def test_stream_plain_images_are_compressed_into_chunks(files, sockets):
    """A PUSH stream without compression (input_mode PULL), data_compression on a CamServer
    layout: images stored with the bitshuffle filter (hdf5plugin reads them)."""
    sender = sockets(mode="PUSH", block=True, send_timeout=10)
    run = files(
        {
            "pipeline_type": "stream",
            "mode": "FILE",
            "data_compression": True,
            "input_stream": sender.address,
            "input_mode": "PULL",
            "records": 5,
        }
    )
    path = run.ready()
    images = [np.full((20, 30), i, np.int32) - 7 for i in range(5)]
    for i, image in enumerate(images):
        assert sender.send({"image": image}, 100 + i, 1_700_000_000.5)
    assert run.wait_report("finished") == "5 records sent"
    assert run.wait() == 0
    with h5py.File(path, "r") as f:
        data = f["data/image/value"]
        assert data.dtype == np.dtype("<i4") and "32008" in data._filters
        assert np.array_equal(data[()], np.stack(images))
        assert list(f["header/pulse_id"][()]) == [100, 101, 102, 103, 104]
        assert list(f["header/global_timestamp"][:, 1]) == [500_000_000] * 5


# --- through the supervisor ------------------------------------------------------------------


def test_a_generator_that_ends_closes_its_file_saying_so(supervisor):
    """A custom pipeline in FILE mode: the file's end reason is why the instance ended."""
    sup = supervisor()
    generator = b"def generate(parameters):\n    for n in range(5):\n        yield {'n': n}\n"
    sup.call("PUT", "/api/v1/pipeline/script/five.py/script_bytes", data=generator)
    config = {"pipeline_type": "custom", "function": "five.py", "max_frame_rate": 50}
    sup.call(
        "POST",
        "/api/v1/pipeline",
        params={"instance_id": "gen"},
        json={**config, "mode": "FILE", "file": "gen.h5"},
    )
    report = wait_for(lambda: sup.ended("gen"), what="the generator to end")
    assert (report["exitcode"], report["finished"]) == (0, "the generator ended"), report
    with h5py.File(report["output_file"], "r") as f:
        assert assert_camserver_file(f, "the generator ended") == 5
        assert list(f["data/n/value"][()]) == [0, 1, 2, 3, 4]


def test_camserver_file_configs_through_the_supervisor(supervisor, tmp_path):
    """CamServer's FILE configs: the standard processing of the camera into a file of the
    node's file_dirs (an absolute path, as CamServer configs name them), and a stream
    pipeline storing a processing pipeline's compressed stream (a cascade) into the store.
    Each ends after `records`, its file where the instance info says; a path outside the
    node's directories is refused."""
    data = tmp_path / "facility"
    data.mkdir()
    sup = supervisor(cameras={"sim": SIM_CAMERA}, settings={"file_dirs": [str(data)]})
    sup.call(
        "POST",
        "/api/v1/pipeline",
        params={"instance_id": "proc"},
        json={"camera_name": "sim", "data_compression": True, "no_client_timeout": 0},
    )
    for instance_id, config in (
        ("beam", {"camera_name": "sim", "file": f"{data}/beam/{{time}}.h5"}),
        ("results", {"pipeline_type": "stream", "input_pipeline": "proc", "file": "r.h5"}),
    ):
        sup.call(
            "POST",
            "/api/v1/pipeline",
            params={"instance_id": instance_id},
            json={**config, "mode": "FILE", "records": 8},
        )

    paths = {}
    for instance_id in ("beam", "results"):
        report = wait_for(lambda i=instance_id: sup.ended(i), what=f"{instance_id} to finish")
        paths[instance_id] = Path(report["output_file"])
        assert (report["exitcode"], report["finished"]) == (0, "8 records sent"), report
    assert paths["beam"].parent == data / "beam"
    assert paths["results"] == sup.data_dir / "store" / "r.h5"
    with h5py.File(paths["beam"], "r") as f:
        assert assert_camserver_file(f, "8 records sent") == 8
        assert f["data/image/value"].shape == (8, 240, 320)
        assert {"x_profile", "intensity", "x_fit_mean"} <= set(f["data"])
        images, profiles = f["data/image/value"][()], f["data/x_profile/value"][()]
        assert np.allclose(images.sum(axis=1), profiles)
    with h5py.File(paths["results"], "r") as f:
        assert assert_camserver_file(f, "8 records sent") == 8
        assert f["data/image/value"].shape == (8, 240, 320)
    for file in ("/tmp/elsewhere.h5", f"{data}/../x.h5", "../up.h5"):
        refused = sup.call(
            "POST",
            "/api/v1/pipeline",
            json={"camera_name": "sim", "mode": "FILE", "file": file},
            expect=400,
        )
        assert "file" in refused["status"] and repr(file) in refused["status"]
    saved = sup.call(  # nor is it saved as a config this node could never run
        "POST",
        "/api/v1/pipeline/elsewhere/config",
        json={"camera_name": "sim", "mode": "FILE", "file": "/tmp/elsewhere.h5"},
        expect=400,
    )
    assert "'/tmp/elsewhere.h5'" in saved["status"]
    assert "elsewhere" not in sup.call("GET", "/api/v1/pipeline")["pipelines"]
    missing = sup.call(
        "POST", "/api/v1/pipeline", json={"camera_name": "sim", "mode": "FILE"}, expect=400
    )
    assert "File name not defined" in missing["status"]


# --- names, unwritable directories, full disks -----------------------------------------------


def test_file_rule():
    dirs = ("/sf/data",)
    good = ("{instance_id}/{time}.h5", "run_1/cam:1.hdf5", "a+b-c.h5", "/sf/data/x/{time}.h5")
    for name in good:
        assert store_path.check_file(name, dirs) == name
    for bad in (
        "../x.h5",
        "/abs.h5",
        "/sf/database/x.h5",
        "/sf/data/../x.h5",
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
        with pytest.raises(ValueError, match="file"):
            store_path.check_file(bad, dirs)


def test_file_stays_in_the_store_or_its_file_dir(tmp_path):
    store, allowed = tmp_path / "store", tmp_path / "allowed"
    (store / "out").mkdir(parents=True)
    (store / "out" / "link").symlink_to(tmp_path)
    allowed.mkdir()
    (allowed / "link").symlink_to(tmp_path)
    start = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert (
        store_path.run_path(store, "{instance_id}/{time}.h5", "cam1", start)
        == store / "cam1" / "20240506_070809_123456.h5"
    )
    assert (
        store_path.run_path(store, f"{allowed}/a.h5", "cam1", start, [allowed]) == allowed / "a.h5"
    )
    for name, dirs in (("out/link/x.h5", ()), (f"{allowed}/link/x.h5", [allowed])):
        with pytest.raises(ValueError, match="leads out of"):
            store_path.run_path(store, name, "cam1", start, dirs)
    with pytest.raises(ValueError, match="invalid file"):
        store_path.run_path(store, "{instance_id}.h5", "../cam1", start)


def test_bad_file_refused_by_the_worker(files, tmp_path):
    run = files(
        {
            "pipeline_type": "stream",
            "input_stream": "tcp://127.0.0.1:1",
            "mode": "FILE",
            "file": "../escape.h5",
        }
    )
    assert "invalid file '../escape.h5'" in run.wait_report("error")
    assert run.wait() == 1
    assert not (tmp_path / "escape.h5").exists() and not (tmp_path / "store").exists()


STREAM_TO_FILE = {"pipeline_type": "stream", "input_stream": "tcp://127.0.0.1:1", "mode": "FILE"}


def test_an_existing_file_is_never_overwritten(files, tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "fixed.h5").write_bytes(b"precious")
    run = files({**STREAM_TO_FILE, "file": "fixed.h5"})
    assert "exists: a pipeline never overwrites a file" in run.wait_report("error")
    assert run.wait() == 1
    assert (tmp_path / "store" / "fixed.h5").read_bytes() == b"precious"


def test_unwritable_store_directory(files, tmp_path):
    (tmp_path / "plain_file").write_text("not a directory")
    run = files(STREAM_TO_FILE, store_dir=tmp_path / "plain_file" / "store")
    error = run.wait_report("error")
    assert "plain_file" in error and "Not a directory" in error
    assert run.wait() == 1


def test_too_little_free_space_refuses_to_start(files, tmp_path):
    run = files({**STREAM_TO_FILE, "min_free_mb": 1e12})
    assert "less than min_free_mb 1e+12" in run.wait_report("error")
    assert run.wait() == 1
    assert not (tmp_path / "store").exists()


def test_free_space_guard_ends_the_run_with_a_valid_file(procs, files, node):
    """Once less than min_free_mb is left (here: raised live), the file is closed cleanly."""
    ring = writer(procs, node, "--frames", "200", "--rate", "200", "--shapes", "24x32:u1")
    run = files({**FRAMES, "camera_name": "cam"})
    path = run.ready()
    procs.go(ring)
    run.wait_counter("frames_out", 5)
    run.send({"config": {**run.spec["config"], "min_free_mb": 1e12}})
    error = run.wait_report("error")
    assert error.startswith(f"OutputFailed: {path}: only ")
    assert "less than min_free_mb 1e+12" in error
    assert run.wait() == 1
    with h5py.File(path, "r") as f:
        records = assert_camserver_file(f, "failed: ")
        assert records >= 5 and f["data/image/value"].shape == (records, 24, 32)
    procs.result(ring)


def test_failing_writes_end_the_run_with_one_error(files, sockets):
    """Writes beyond the file size limit fail as on a full disk: one error report, exit 1."""
    sender = sockets(mode="PUSH", block=True, send_timeout=1)
    run = files(
        {**STREAM_TO_FILE, "input_stream": sender.address, "input_mode": "PULL"},
        prelude=DISK_FULL.format(limit=1 << 20),
    )
    path = run.ready()
    rng = np.random.default_rng(2)
    for pid in range(40):  # 40 incompressible 128 kB frames: 5 MB > 1 MB
        if not sender.send({"image": rng.integers(0, 1 << 16, (256, 256), np.uint16)}, pid, 0.0):
            break
        if run.process.poll() is not None:
            break
    error = run.wait_report("error")
    assert error.startswith(f"OutputFailed: {path}: ") and error.endswith("File too large"), error
    assert run.wait() == 1, run.log
    assert sum("ERROR" in line for line in run.log) <= 2, run.log


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


def test_shmcam_file_records_are_whole(tmp_path):
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


def test_camserver_file_keeps_every_dataset_a_row_per_record(tmp_path):
    """A channel first seen later, or missing from a record, has zeros (empty strings) in
    those rows; strings are CamServer's S1000, UTF-8; a value of another type that does not
    cast losslessly is a format change."""
    f = CamServerFile(tmp_path / "x.h5", "DEFAULT", {}, records=None)
    f.write(f.prepare(1, (10, 1), {"n": 1, "text": "é"}))
    f.write(f.prepare(2, (11, 2), {"late": np.arange(3.0)}))
    with pytest.raises(LayoutChange, match="Data format changed: channel 'n' changed from int64"):
        f.prepare(3, (12, 3), {"n": 1.5})
    f.close("done")
    with h5py.File(tmp_path / "x.h5", "r") as h:
        assert list(h["data/n/value"][()]) == [1, 0]
        assert list(h["data/text/value"][()]) == ["é".encode(), b""]
        assert h["data/late/value"][()].tolist() == [[0, 0, 0], [0, 1, 2]]
        assert h["data/late/timestamp"][()].tolist() == [[0, 0], [11, 2]]
        assert h["header/pulse_id"][()].tolist() == [1, 2]
        assert h["general/records"][()] == 2 and h["general/pid"][()] == os.getpid()
