"""An instance process started by a test as the supervisor starts it: the spec as the first
line on stdin, reports (JSON lines) queued from stdout, the log collected from stderr."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time


class WorkerProcess:
    def __init__(self, argv: list[str], spec: dict, env: dict | None = None):
        self.spec = spec
        self.reports: queue.Queue = queue.Queue()
        self.log: list[str] = []
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})},
        )
        self._threads = [
            threading.Thread(target=self._read, args=(stream, handle), daemon=True)
            for stream, handle in (
                (self.process.stdout, self._report),
                (self.process.stderr, self.log.append),
            )
        ]
        for thread in self._threads:
            thread.start()
        self.send(spec)

    @staticmethod
    def _read(stream, handle) -> None:
        for line in stream:
            handle(line.rstrip("\n"))

    def _report(self, line: str) -> None:
        self.reports.put(json.loads(line))

    def send(self, message: dict) -> None:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def wait_report(self, key: str, timeout: float = 20.0):
        """The value of the next report that has `key`; fails on an error report before it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                report = self.reports.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {key!r} report; log: {self.log[-10:]}") from None
            if key in report:
                return report[key]
            assert "error" not in report, report

    def wait(self, timeout: float = 20.0) -> int:
        code = self.process.wait(timeout)
        for thread in self._threads:
            thread.join(5)
        return code

    def stop(self) -> int:
        """Ask the instance to stop, as the supervisor does; kill it if it does not."""
        if self.process.poll() is None:
            try:
                self.send({"stop": True})
            except (BrokenPipeError, OSError):
                pass
        try:
            return self.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.wait()
