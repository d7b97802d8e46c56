"""One instance process as the supervisor sees it: start, control, logs, statistics, stop.

Instances are started as clean interpreters (`python -m shmcam.workers KIND`), never forked
from the threaded daemon. Their stdin is the control channel; stdout carries their few reports
(ready, finished, error, a camera's online state); stderr their log, of which the last lines
are kept for the REST API.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import sys
import threading
import time

import psutil

from shmcam.shm import StatsBlock, segment

log = logging.getLogger(__name__)

LOG_LINES = 100
STOP_TIMEOUT = 5.0


class Instance:
    def __init__(
        self,
        kind: str,
        instance_id: str,
        config: dict,
        spec: dict,
        stream: str,
        *,
        read_only: bool = False,
        permanent: bool = False,
        omp_threads: int = 1,
    ):
        self.kind = kind
        self.id = instance_id
        self.config = config
        self.spec = spec  # what the worker gets: config, ring, stats, port, ...
        self.stream = stream
        self.read_only = read_only
        self.permanent = permanent
        self.omp_threads = omp_threads
        self.logs: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self.process: subprocess.Popen | None = None
        self.start_time: float | None = None
        self.exit_code: int | None = None
        self.last_error: str | None = None
        self.finished: str | None = None
        self.output_file: str | None = None  # the HDF5 file a store pipeline writes
        self.online: tuple[bool, str] | None = None  # a camera's last (online, reason) report
        self.restarts = 0
        self.reaped = False  # its end was noticed and cleaned up
        self.idle_since: float | None = None  # on-demand bookkeeping of the manager
        self._ready = threading.Event()
        self._stats: StatsBlock | None = None
        self._psutil: psutil.Process | None = None
        self._rates = (time.monotonic(), {}, {})  # time, counters then, rates (Hz)
        self._cpu: float | None = None
        self._memory: int | None = None
        self._stdin_lock = threading.Lock()

    # --- lifetime -------------------------------------------------------------------------
    def start(self) -> None:
        self._ready.clear()
        self.exit_code = self.finished = self.online = None
        self.reaped = False
        env = dict(os.environ, OMP_NUM_THREADS=str(self.omp_threads), PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shmcam.workers", self.kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )  # Ctrl-C at the terminal is the supervisor's alone
        self.start_time = time.time()
        self._psutil = psutil.Process(self.process.pid)
        self._send({**self.spec, "config": self.config})
        threading.Thread(
            target=self._read_reports, args=(self.process,), daemon=True, name=f"{self.id} reports"
        ).start()
        threading.Thread(
            target=self._read_log, args=(self.process,), daemon=True, name=f"{self.id} log"
        ).start()

    def wait_ready(self, timeout: float) -> None:
        """Block until the instance reports ready; raise RuntimeError with its error if not."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    self.last_error
                    or self._last_log()
                    or f"{self.kind} {self.id} did not start within {timeout:g} s"
                )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Ask the instance to stop, kill it if it does not, and remove its segments."""
        process = self.process
        if process is not None and process.poll() is None:
            try:
                self._send({"stop": True})
                process.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s %s did not stop in %g s: killing it", self.kind, self.id, timeout)
                process.kill()
                process.wait()
        if process is not None:
            self.exit_code = process.returncode
        self.release_segments()

    def release_segments(self) -> None:
        if self._stats is not None:
            self._stats.close()
            self._stats = None
        for name in (self.spec["stats"], *self._ring_segments()):
            segment.unlink(name)

    def _ring_segments(self) -> list[str]:
        """The generations of the ring the instance writes: a camera its frames' ring (which
        its pipelines only read), a pipeline its preview ring."""
        own = self.spec["ring"] if self.kind == "camera" else self.spec.get("preview")
        return segment.list_segments(own + ".g") if own else []

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def state(self) -> str:
        """starting (not ready yet), running, ended (exit code 0: stopped or done) or failed."""
        if self.alive:
            return "running" if self.ready else "starting"
        return "ended" if self.poll() == 0 else "failed"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def poll(self) -> int | None:
        """The exit code if the process has ended (recorded), else None."""
        if self.process is None:
            return self.exit_code
        code = self.process.poll()
        if code is not None:
            self.exit_code = code
        return code

    def send_config(self, config: dict) -> None:
        self.config = config
        self._send({"config": config})

    def _send(self, message: dict) -> None:
        with self._stdin_lock:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()

    # --- reports and logs ------------------------------------------------------------------
    def _read_reports(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if "ready" in report:
                ready = report["ready"]
                self.output_file = ready.get("output_file") if isinstance(ready, dict) else None
                self._ready.set()
            if "error" in report:
                self.last_error = str(report["error"])
            if "finished" in report:
                self.finished = str(report["finished"])
            if "online" in report:
                self.online = (bool(report["online"]), str(report.get("reason", "")))

    def _read_log(self, process: subprocess.Popen) -> None:
        worker_log = logging.getLogger(f"shmcam.instance.{self.id}")
        for line in process.stderr:
            line = line.rstrip("\n")
            self.logs.append(line)
            worker_log.info("%s", line)

    def _last_log(self) -> str | None:
        return self.logs[-1] if self.logs else None

    # --- statistics ------------------------------------------------------------------------
    def counters(self) -> dict:
        """The instance's shared-memory counters ({} while it has none)."""
        if self._stats is None:
            try:
                self._stats = StatsBlock(self.spec["stats"])
            except (FileNotFoundError, segment.ShmError):
                return {}
        return self._stats.snapshot()

    def histogram(self) -> list[tuple[float, int]]:
        """Processing-time histogram (seconds, count) of the instance, [] while it has none."""
        return self._stats.histogram() if self.counters() and self._stats else []

    def update_rates(self) -> None:
        """Frames/s in and out, and CPU, since the last call (the manager's watchdog calls this
        periodically, so every reader of the statistics sees the same figures)."""
        if self.alive and self._psutil is not None:
            try:
                self._cpu = self._psutil.cpu_percent()
                self._memory = self._psutil.memory_info().rss
            except psutil.Error:
                pass
        now, counters = time.monotonic(), self.counters()
        then, before, _ = self._rates
        rates = {
            k: (counters[k] - before.get(k, counters[k])) / max(1e-3, now - then)
            for k in ("frames_in", "frames_out")
            if k in counters
        }
        self._rates = (now, counters, rates)

    def statistics(self) -> dict:
        """CamServer's statistics keys, plus shmcam's richer ones."""
        counters = self.counters()
        rates = self._rates[2]
        cpu, memory = (self._cpu, self._memory) if self.alive else (None, None)
        return {
            "total_bytes": counters.get("bytes_out", 0),
            "clients": counters.get("clients", 0),
            "throughput": rates.get("frames_out", 0.0),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "fps_in": rates.get("frames_in", 0.0),
            "fps_out": rates.get("frames_out", 0.0),
            "rx": f"{rates.get('frames_in', 0.0):.1f}Hz - {counters.get('frames_in', 0)}",
            "tx": f"{rates.get('frames_out', 0.0):.1f}Hz - {counters.get('frames_out', 0)}",
            "pid": self.pid,
            "cpu": cpu,
            "memory": memory,
            "header_changes": counters.get("header_changes"),
            "frame_shape": (
                [counters["frame_height"], counters["frame_width"]]
                if counters.get("frame_height")
                else None
            ),  # numpy order
            "dropped": counters.get("dropped", 0),
            "torn": counters.get("torn", 0),
            "errors": counters.get("errors", 0),
            "lag": counters.get("lag", 0),
            "ring_fill": self._ring_fill(counters),
            "processing_ms_p50": counters.get("proc_ms_p50"),
            "processing_ms_p99": counters.get("proc_ms_p99"),
            "restarts": self.restarts,
        }

    def _ring_fill(self, counters: dict) -> float | None:
        """How much of its camera's ring a pipeline has yet to read (1.0: the next frame
        drops); None when it reads no ring."""
        if self.kind != "pipeline" or not self.spec["ring"] or self.spec.get("input"):
            return None
        return round(min(1.0, counters.get("lag", 0) / self.spec["ring_slots"]), 3)

    def info(self) -> dict:
        """CamServer's instance info."""
        return {
            "stream_address": self.stream,
            "is_stream_active": self.alive,
            "state": self.state,
            "camera_name": self.config.get(
                "camera_name", self.id if self.kind == "camera" else None
            ),
            "config": self.config,
            "instance_id": self.id,
            "read_only": self.read_only,
            "last_start_time": (
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.start_time))
                if self.start_time
                else None
            ),
            "statistics": self.statistics(),
            "exit_code": self.exit_code,
            "last_error": self.last_error,
            "permanent": self.permanent,
            "output_file": self.output_file,
        }
