"""A camera instance process (`python -m shmcam.workers camera`) started directly by a test, as
the supervisor starts it: the spec sent on its control channel, reports read, always stopped."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from supervisor_harness import free_port_block
from worker_harness import WorkerProcess

from shmcam.shm import RingReader, StatsBlock, ring_base, stats_name


class CameraProcess(WorkerProcess):
    def __init__(self, node: str, name: str, config: dict, data_dir: Path, env: dict | None = None):
        self.ring = ring_base(node, name)
        self.states: list[tuple[bool, str]] = []
        super().__init__(
            [sys.executable, "-m", "shmcam.workers", "camera"],
            {
                "node": node,
                "camera": name,
                "ring": self.ring,
                "ring_slots": 8,
                "stats": stats_name(node, f"c-{name}"),
                "port": free_port_block(1),
                "scripts_dir": str(data_dir / "scripts"),
                "config": config,
            },
            env,
        )
        self.ready = self.wait_report("ready")

    def _report(self, line: str) -> None:
        report = json.loads(line)
        if "online" in report:
            self.states.append((report["online"], report["reason"]))
        super()._report(line)

    def wait_state(self, online: bool, timeout: float = 20.0) -> str:
        """Wait for the camera to report online (or offline); the reason it gave."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.states and self.states[-1][0] == online:
                return self.states[-1][1]
            time.sleep(0.02)
        raise AssertionError(
            f"camera never reported online={online}; states {self.states}; log: {self.log[-10:]}"
        )

    def reader(self, timeout: float = 20.0) -> RingReader:
        return RingReader(self.ring, timeout=timeout)

    def counters(self) -> dict:
        stats = StatsBlock(self.spec["stats"])
        try:
            return stats.snapshot()
        finally:
            stats.close()
