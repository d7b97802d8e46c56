"""FILE mode: a pipeline's results written into one HDF5 file per run (docs/files.md).

The file is `file` (store_path.py: in the node's store, or an absolute path in its file_dirs),
in the `layout` asked for (h5file.py: CamServer's DEFAULT, FLAT, BSH5, or shmcam's SHMCAM).
Flushed once a second, so readers see progress and a crash loses about a second. Before the
disk is full (less than `min_free_mb` left, checked at each flush) the run ends with the file
closed cleanly; a write that fails anyway (quota, I/O error) ends it as it stands; a value
that no longer fits its dataset ends it too (CamServer's "Data format changed"), unless
`change` opens the next data groups. Each of these raises OutputFailed: the instance ends with
one error report and exit code 1.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import shmcam
from shmcam.shm import StatsBlock

from . import pipeline_keys, store_path
from .h5file import CamServerFile, LayoutChange, StoreFile, WriteError
from .output import Output

log = logging.getLogger(__name__)

FLUSH_PERIOD = 1.0


class OutputFailed(RuntimeError):
    """The file cannot take more records: the run ends."""


def check_free_space(path: Path, min_free: float) -> None:
    """OutputFailed unless the file system of `path` (or of its nearest existing parent) has
    `min_free` MB left."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    free = shutil.disk_usage(existing).free / 2**20
    if free < min_free:
        raise OutputFailed(
            f"only {free:.0f} MB free in {existing}, less than min_free_mb {min_free:g}"
        )


class FileOutput(Output):
    def __init__(self, spec: dict, config: dict, stats: StatsBlock):
        super().__init__(pipeline_keys.output(config))
        self.stats = stats
        keys = pipeline_keys.file(config)
        start = datetime.now(UTC)
        self.path = store_path.run_path(
            spec["store_dir"], keys.file, spec["instance_id"], start, spec.get("file_dirs", ())
        )
        self.min_free = keys.min_free_mb
        check_free_space(self.path.parent, self.min_free)
        run = {
            "node": spec["node"],
            "instance_id": spec["instance_id"],
            "camera_name": config.get("camera_name") or "",
            "config": json.dumps(config),
            "shmcam_version": shmcam.__version__,
        }
        if keys.layout == "SHMCAM":
            self.file = StoreFile(self.path, {"created": start.isoformat(), **run})
        else:
            self.file = CamServerFile(
                self.path,
                keys.layout,
                run,
                localtime=keys.localtime,
                change=keys.change,
                records=keys.records,
                compressed=pipeline_keys.image_compressed(config),
            )
        log.info("writing %s (layout %s)", self.path, keys.layout)
        self.failure: str | None = None
        self._next_flush = time.monotonic() + FLUSH_PERIOD

    def apply(self, config: dict) -> None:
        """Also min_free_mb; the other FILE keys are fixed for the run."""
        super().apply(config)
        self.min_free = pipeline_keys.file(config).min_free_mb

    def send(self, result: dict, pulse_id: int, timestamp) -> bool:
        """Write one record (selected already: output.select)."""
        if self.guard.active:
            result = self.guard(result)
        try:
            self.file.write(self.file.prepare(pulse_id, timestamp, result))
        except (LayoutChange, WriteError) as error:
            raise self._failed(error) from error
        return True

    def ready(self) -> dict:
        return {"output_file": str(self.path)}

    def periodic(self) -> None:
        """Flush once a second, and check the free space."""
        now = time.monotonic()
        if now < self._next_flush:
            return
        self._next_flush = now + FLUSH_PERIOD
        try:
            self.file.flush()
            check_free_space(self.path.parent, self.min_free)
        except (WriteError, OutputFailed) as error:
            raise self._failed(error) from error

    def _failed(self, error: Exception) -> OutputFailed:
        self.failure = f"{self.path}: {error}"
        return OutputFailed(self.failure)

    def counters(self) -> dict:
        return {
            "clients": 0,
            "dropped": 0,
            "header_changes": getattr(self.file, "groups", 1),
            "bytes_out": self.file.bytes_written,
        }

    def close(self, end_reason: str = "stopped") -> None:
        try:
            self.file.close(f"failed: {self.failure}" if self.failure else end_reason)
        except WriteError as error:
            log.error("closing %s failed: %s", self.path, error)
