"""An instance process started by a test as the supervisor starts it: the spec as the first
line on its control channel, reports (JSON lines) queued from its report channel, its log
records and printed output collected (workers/control.py)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time

from shmcam.workers.control import CONTROL_FD, REPORT_FD


class WorkerProcess:
    def __init__(self, argv: list[str], spec: dict, env: dict | None = None):
        self.spec = spec
        self.reports: queue.Queue = queue.Queue()
        self.log: list[str] = []
        control_r, control_w = os.pipe()
        report_r, report_w = os.pipe()
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            pass_fds=(control_r, report_w),
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": "1",
                CONTROL_FD: str(control_r),
                REPORT_FD: str(report_w),
                **(env or {}),
            },
        )
        os.close(control_r)
        os.close(report_w)
        self.control = os.fdopen(control_w, "w")
        reports = os.fdopen(report_r, "r")
        self._threads = [
            threading.Thread(target=self._read, args=(stream, handle), daemon=True)
            for stream, handle in ((reports, self._report), (self.process.stdout, self.log.append))
        ]
        for thread in self._threads:
            thread.start()
        self.send(spec)

    @staticmethod
    def _read(stream, handle) -> None:
        for line in stream:
            handle(line.rstrip("\n"))
        stream.close()

    def _report(self, line: str) -> None:
        report = json.loads(line)
        if "log" in report:
            self.log.append(report["log"]["message"])
        self.reports.put(report)

    def send(self, message: dict) -> None:
        self.control.write(json.dumps(message) + "\n")
        self.control.flush()

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
        """Stop the instance as the supervisor does (SIGTERM); kill it if it does not."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.wait()
        finally:
            try:
                self.control.close()
            except OSError:
                pass
