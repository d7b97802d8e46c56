"""Store pipeline: one HDF5 file per run, of a camera's frames or of a bsread stream's channels.

Input is the camera's ring (zero-copy; each frame is stored as the camera stream's channels:
width, height, timestamp, image, x_axis, y_axis) or a bsread stream (`input_stream` with
`input_mode` SUB or PULL, or `input_pipeline`: the supervisor resolves them into the spec's
`input`), whose channels are stored as they come. An image that arrives
bitshuffle_lz4-compressed is written as it arrived, without decompression; ring frames are
compressed into the same chunk format. The file is `output_file` under the node's store
directory (store_path.py), laid out as h5file.py and docs/store.md describe, and flushed once
a second, so readers see progress and a crash loses about a second.

The pipeline's flow-control keys apply (the pipeline's Gate): pause, max_frame_rate,
downsampling, pid_range, records. Reaching the end of pid_range or `records` closes the file
and ends the instance with exit code 0, and so does a stop. A frame the camera overwrote while
it was being compressed is not written (counted torn). A change of a channel's type or shape
(camera resized) ends the run cleanly too: a file keeps one layout, and the next run starts a
new file. Before the disk is full (less than `min_free_mb` left, checked once a second) the
run ends with the file closed cleanly; a write that fails anyway (quota, I/O error) ends it
as it stands. Either way: one error report and exit code 1.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import shmcam
from shmcam.bsread import Decoder, Receiver
from shmcam.bsread.compression import BITSHUFFLE_LZ4
from shmcam.shm import StatsBlock

from . import store_path
from .control import Control, report
from .gate import Gate
from .h5file import LayoutChange, StoreFile, WriteError
from .inputs import RingInput

log = logging.getLogger(__name__)

STATS_PERIOD = 0.5
FLUSH_PERIOD = 1.0
WAIT = 0.2
#: A run ends cleanly when less is left on the store's disk (config `min_free_mb`).
MIN_FREE_MB = 512


class DiskFull(OSError):
    """Less free space than `min_free_mb` where the file is."""


def min_free_mb(config: dict) -> float:
    value = config.get("min_free_mb")
    return MIN_FREE_MB if value is None else float(value)


def check_free_space(path: Path, min_free: float) -> None:
    """DiskFull unless the file system of `path` (or of its nearest existing parent) has
    `min_free` MB left."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    free = shutil.disk_usage(existing).free / 2**20
    if free < min_free:
        raise DiskFull(f"only {free:.0f} MB free in {existing}, less than min_free_mb {min_free:g}")


class Item(NamedTuple):
    """One input record: what the file gets, plus the ring frame to validate (or None)."""

    pulse_id: int
    timestamp: tuple[int, int]
    values: dict[str, Any]
    timestamps: dict[str, tuple[int, int] | None]
    frame: Any


class RingFrames:
    """The camera's ring (inputs.RingInput): a frame becomes the camera stream's channels."""

    def __init__(self, ring: str):
        self.name = f"ring {ring}"
        self.ring = RingInput(ring)

    def start(self) -> None:
        self.ring.skip_to_newest()  # frames that passed during start-up are not drops

    def next(self, timeout: float) -> Item | None:
        frame = self.ring.next(timeout)
        if frame is None:
            return None
        image = frame.image
        x_axis, y_axis = self.ring.axes(frame)
        sec, ns = frame.timestamp
        return Item(
            frame.pulse_id,
            frame.timestamp,
            {
                "width": image.shape[1],
                "height": image.shape[0],
                "timestamp": sec + ns / 1e9,
                "image": image,
                "x_axis": x_axis,
                "y_axis": y_axis,
            },
            {},
            frame,
        )

    def intact(self, item: Item) -> bool:
        return self.ring.valid(item.frame)

    def counters(self) -> dict[str, int]:
        return {"dropped": self.ring.missed, "torn": self.ring.torn, "lag": self.ring.lag}

    def close(self) -> None:
        self.ring.close()


def _raw_image(name: str, shape: tuple[int, ...], codec: str) -> bool:
    """Images that arrive as bitshuffle_lz4 are HDF5 chunks already: keep them compressed."""
    return codec == BITSHUFFLE_LZ4 and len(shape) >= 2


class StreamMessages:
    """A bsread stream: all of a message's channels, images kept compressed as they came."""

    def __init__(self, address: str, mode: str):
        self.name = f"{mode} {address}"
        self.receiver = Receiver(address, mode=mode, decoder=Decoder(raw=_raw_image))

    def start(self) -> None:
        pass

    def next(self, timeout: float) -> Item | None:
        message = self.receiver.receive(timeout)
        if message is None:
            return None
        return Item(
            message.pulse_id, message.global_timestamp, message.data, message.timestamps, None
        )

    def intact(self, item: Item) -> bool:
        return True

    def counters(self) -> dict[str, int]:
        return {"errors": self.receiver.rejected + self.receiver.decoder.errors}

    def close(self) -> None:
        self.receiver.close()


def open_input(spec: dict) -> RingFrames | StreamMessages:
    """The input the supervisor resolved (`input`: a stream, or None for the camera's ring)."""
    source = spec.get("input") or {}
    if source.get("stream2"):
        raise ValueError("a store pipeline stores one stream: input_stream2 is not supported")
    if source.get("stream"):
        return StreamMessages(source["stream"], source.get("mode") or "SUB")
    if not spec.get("ring"):
        raise ValueError("a store pipeline needs a camera_name, input_stream or input_pipeline")
    return RingFrames(spec["ring"])


class Store:
    """One run: its input, file, gate and statistics."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.config = spec["config"]
        start = datetime.now(UTC)
        self.path = store_path.run_path(
            spec["store_dir"], self.config.get("output_file"), spec["instance_id"], start
        )
        self.min_free = min_free_mb(self.config)
        check_free_space(self.path.parent, self.min_free)
        self.gate = Gate(self.config)
        self.written = 0
        self.errors = 0
        self.frame_shape: tuple[int, ...] | None = None
        with ExitStack() as undo:  # whatever is open when a later step fails is closed
            self.stats = StatsBlock(spec["stats"], create=True)
            undo.callback(self.stats.close)
            self.input = open_input(spec)
            undo.callback(self.input.close)
            self.file = StoreFile(
                self.path,
                {
                    "created": start.isoformat(),
                    "node": spec["node"],
                    "instance_id": spec["instance_id"],
                    "camera_name": self.config.get("camera_name") or "",
                    "input": self.input.name,
                    "config": json.dumps(self.config),
                    "shmcam_version": shmcam.__version__,
                },
            )
            undo.pop_all()

    def run(self, control: Control) -> int:
        self.input.start()
        report(ready={"stream_port": self.spec["port"], "output_file": str(self.path)})
        log.info("storing %s into %s", self.input.name, self.path)
        try:
            reason = self._loop(control)
        except (DiskFull, WriteError) as error:  # one report, no retries here
            self.errors += 1
            message = f"{self.path}: {error}"
            log.error("%s", message)
            self.close(f"failed: {error}")
            report(error=message)
            return 1
        self.close(reason or "stopped")
        if reason:
            log.info("store finished: %s; %d records in %s", reason, self.written, self.path)
            report(finished=reason)
        return 0

    def _loop(self, control: Control) -> str | None:
        next_stats = next_flush = 0.0
        while not control.stop.is_set():
            control.apply_update(self._apply_config)
            now = time.monotonic()
            if now >= next_stats:
                self.publish_stats()
                next_stats = now + STATS_PERIOD
            if now >= next_flush:
                self.file.flush()
                check_free_space(self.path.parent, self.min_free)
                next_flush = now + FLUSH_PERIOD
            item = self.input.next(WAIT)
            if item is not None:
                reason = self._store(item)
                if reason:
                    return reason
        return None

    def _store(self, item: Item) -> str | None:
        """Write one input record if the gate admits it; why the run is over, or None."""
        self.stats.add("frames_in")
        gate = self.gate
        passed = gate.passed(item.pulse_id)
        if passed:
            return passed
        if not gate.admit(item.pulse_id):
            return None
        t0 = time.perf_counter_ns()
        try:
            record = self.file.prepare(item.pulse_id, item.timestamp, item.values, item.timestamps)
        except LayoutChange as change:
            return f"{change}; a file keeps one layout, the next run starts a new one"
        if not self.input.intact(item):
            return None  # overwritten while it was read: never written
        self.file.write(record)
        self.frame_shape = getattr(item.values.get("image"), "shape", self.frame_shape)
        self.written += 1
        self.stats.add("frames_out")
        self.stats.record_time(time.perf_counter_ns() - t0)
        return gate.finished(item.pulse_id, self.written)

    def _apply_config(self, config: dict) -> None:
        if config.get("output_file") != self.config.get("output_file"):
            log.warning("output_file cannot change during a run; it applies to the next run")
        self.gate, self.min_free = Gate(config), min_free_mb(config)

    def publish_stats(self) -> None:
        counters = {"errors": 0, **self.input.counters()}
        counters["errors"] += self.errors
        counters["bytes_out"] = self.file.bytes_written
        if self.frame_shape is not None and len(self.frame_shape) == 2:
            counters["frame_height"], counters["frame_width"] = self.frame_shape
        for field, value in counters.items():
            self.stats.set(field, value)
        self.stats.touch()

    def close(self, end_reason: str = "stopped") -> None:
        """Close the file (once), then the input and the statistics."""
        if self.file is None:
            return
        self.publish_stats()
        file, self.file = self.file, None
        try:
            file.close(end_reason)
        except OSError as error:
            log.error("closing %s failed: %s", self.path, error)
        finally:
            self.input.close()
            self.stats.close()


def run(spec: dict, control: Control) -> int:
    store = Store(spec)
    try:
        return store.run(control)
    finally:
        store.close()
