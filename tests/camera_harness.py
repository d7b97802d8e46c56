"""A camera instance process (`python -m shmcam.workers camera`) started directly by a test, as
the supervisor starts it: the spec on stdin, reports read from stdout, always stopped."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from shmcam.shm import RingReader, StatsBlock, ring_base, stats_name
from supervisor_harness import free_port_block


class CameraProcess:
    def __init__(self, node: str, name: str, config: dict, data_dir: Path,
                 env: dict | None = None):
        self.ring = ring_base(node, name)
        self.spec = {"node": node, "ring": self.ring, "ring_slots": 8,
                     "stats": stats_name(node, f"c-{name}"), "port": free_port_block(1),
                     "scripts_dir": str(data_dir / "scripts"), "config": config}
        self.reports: queue.Queue = queue.Queue()
        self.states: list[tuple[bool, str]] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shmcam.workers", "camera"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"})
        self.process.stdin.write(json.dumps(self.spec) + "\n")
        self.process.stdin.flush()
        self.log: list[str] = []
        threading.Thread(target=self._read, args=(self.process.stdout, self._report),
                         daemon=True).start()
        threading.Thread(target=self._read, args=(self.process.stderr, self.log.append),
                         daemon=True).start()
        self.wait_report("ready")

    @staticmethod
    def _read(stream, handle) -> None:
        for line in stream:
            handle(line.rstrip("\n"))

    def _report(self, line: str) -> None:
        report = json.loads(line)
        if "online" in report:
            self.states.append((report["online"], report["reason"]))
        self.reports.put(report)

    def wait_report(self, key: str, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                report = self.reports.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {key!r} report; log: {self.log[-10:]}") from None
            if key in report:
                return report
            assert "error" not in report, report

    def wait_state(self, online: bool, timeout: float = 20.0) -> str:
        """Wait for the camera to report online (or offline); the reason it gave."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.states and self.states[-1][0] == online:
                return self.states[-1][1]
            time.sleep(0.02)
        raise AssertionError(f"camera never reported online={online}; states {self.states}; "
                             f"log: {self.log[-10:]}")

    def reader(self, timeout: float = 20.0) -> RingReader:
        return RingReader(self.ring, timeout=timeout)

    def counters(self) -> dict:
        stats = StatsBlock(self.spec["stats"])
        try:
            return stats.snapshot()
        finally:
            stats.close()

    def stop(self) -> int:
        if self.process.poll() is None:
            try:
                self.process.stdin.write('{"stop": true}\n')
                self.process.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
