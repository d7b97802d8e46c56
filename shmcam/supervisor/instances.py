"""One instance process as the supervisor sees it: start, control, logs, statistics, stop.

Instances are started as clean interpreters (`python -m shmcam.workers KIND`), never forked
from the threaded daemon, with their control and report channels (workers/control.py) served by
the hub (hub.py): nothing here ever blocks on an instance. Config updates are acknowledged by
the instance once applied (or refused), so a REST call answers what really happened. Stopping
is SIGTERM, then SIGKILL after a deadline, so even an instance stuck in C code goes.

An external pipeline's instance process runs a program of its own (workers/external.py): it
reports the program's pid, so that its CPU and memory count for the instance, a kill takes
its whole process group, and a successor supervisor ends it if it outlived this one.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time

import psutil

from shmcam.shm import StatsBlock, remove_ring, segment
from shmcam.workers import split

from .errors import BadRequest, Unavailable
from .hub import Hub, Link
from .succession import PidFiles

log = logging.getLogger(__name__)

LOG_LINES = 100
STOP_TIMEOUT = 5.0
PARENT_ENV = "SHMCAM_SUPERVISOR_PID"  # workers/__main__.py reads both
MEMORY_ENV = "SHMCAM_MEMORY_LIMIT"


class Instance:
    def __init__(
        self,
        kind: str,
        instance_id: str,
        config: dict,
        spec: dict,
        stream: str,
        *,
        hub: Hub,
        pids: PidFiles,
        shared: bool = False,
        permanent: bool = False,
        omp_threads: int = 1,
        memory_limit: int = 0,
    ):
        self.kind = kind
        self.id = instance_id
        self.config = config
        self.spec = spec  # what the worker gets: config, ring, stats, port, ...
        self.stream = stream
        self.shared = shared  # reused by name or for an equal config
        self.permanent = permanent
        self.omp_threads = omp_threads
        self.memory_limit = memory_limit  # bytes of address space, 0 for none
        self.hub = hub
        self.pids = pids
        self.logs: collections.deque[dict] = collections.deque(maxlen=LOG_LINES)
        self.link: Link | None = None
        self.start_time: float | None = None
        self.exit_code: int | None = None
        self.last_error: str | None = None
        self.finished: str | None = None
        self.output_file: str | None = None  # the HDF5 file a FILE mode pipeline writes
        self.stream_ipc: str | None = None  # a camera's ipc endpoint (protocol: ipc)
        self.online: tuple[bool, str] | None = None  # a camera's last (online, reason) report
        self.restarts = 0
        self.restart_at: float | None = None  # when the watchdog restarts it (monotonic)
        self.program: psutil.Process | None = None  # an external pipeline's program
        self.progress_ns: int | None = None  # when its process last reported progress
        self.reaped = False  # its end was noticed and cleaned up
        self.idle_since: float | None = None  # on-demand bookkeeping of the watchdog
        self._ready = threading.Event()
        self._stats: StatsBlock | None = None
        self._crew = self._crew_statistics(kind, config, spec)
        self._psutil: psutil.Process | None = None
        self._rates = (time.monotonic(), {}, {})  # time, counters then, rates (Hz)
        self._cpu: float | None = None
        self._memory: int | None = None
        self._acks = threading.Condition()
        self._seq = 0
        self._pending: dict[int, dict] = {}  # config updates sent, by sequence number
        self._answers: dict[int, str | None] = {}  # seq -> None (applied) or the refusal
        self._waiting = False  # a call waits for its update's answer
        self._silent_since: float | None = None  # an update went unanswered since then

    @property
    def read_only(self) -> bool:
        """Refuses config updates: its config says so (CamServer's opt-in since c970766)."""
        return self.config.get("read_only") is True

    @property
    def process(self) -> subprocess.Popen | None:
        return self.link.process if self.link is not None else None

    # --- lifetime -------------------------------------------------------------------------
    def start(self) -> None:
        self._ready.clear()
        with self._acks:  # a new process: nothing of the last one's updates is pending
            self._pending.clear()
            self._silent_since = None
        self.exit_code = self.finished = self.online = None
        self.program = self.progress_ns = None
        self.reaped = False
        self.restart_at = None
        env = dict(
            os.environ,
            OMP_NUM_THREADS=str(self.omp_threads),
            PYTHONUNBUFFERED="1",
            **{PARENT_ENV: str(os.getpid())},
        )
        if self.memory_limit:
            env[MEMORY_ENV] = str(self.memory_limit)
        self.link = self.hub.start(
            [sys.executable, "-m", "shmcam.workers", self.kind],
            env,
            self._on_report,
            self._on_output,
        )
        self.start_time = time.time()
        self._psutil = psutil.Process(self.link.process.pid)
        self.pids.record(self.link.process.pid, self.kind, self.id)
        self.link.send({**self.spec, "config": self.config})

    def wait_ready(self, timeout: float) -> None:
        """Block until the instance reports ready; raise RuntimeError with its error if not."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    self.last_error
                    or self._last_log()
                    or f"{self.kind} {self.id} did not start within {timeout:g} s"
                )

    def terminate(self) -> None:
        """Ask the instance to stop (SIGTERM); it finishes its frame and exits."""
        process = self.process
        if process is not None and process.poll() is None:
            try:
                process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            log.warning("%s %s did not stop: killing it", self.kind, self.id)
            if self.program is not None:  # first, while its parent keeps its pid from reuse
                try:
                    os.killpg(self.program.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            process.kill()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the instance (SIGTERM, SIGKILL after timeout) and remove its segments."""
        self.terminate()
        self.wait_stopped(timeout)

    def wait_stopped(self, timeout: float) -> None:
        """After terminate(): wait for the end, kill at the deadline, clean up."""
        process = self.process
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                process.wait()
        self.poll()
        self.release_segments()

    def release_segments(self) -> None:
        """Remove what the instance leaves: its statistics, the rings it writes (its record
        ring closed first, so that its readers stop waiting for it) and a program's config."""
        if self._stats is not None:
            self._stats.close()
            self._stats = None
        if self._crew is not None:
            self._crew.close()
        for name in (self.spec["stats"], *self._ring_segments()):
            segment.unlink(name)
        if self.spec.get("output_ring"):
            remove_ring(self.spec["output_ring"])
        if "program" in self.spec:
            try:
                os.unlink(self.spec["program"]["config_file"])
            except FileNotFoundError:
                pass

    def _ring_segments(self) -> list[str]:
        """The generations of the ring the instance writes: a camera its frames' ring (which
        its pipelines only read), a pipeline its preview ring and what its workers share."""
        if self.kind == "camera":
            return segment.list_segments(self.spec["ring"] + ".g")
        shared = split.segments(self.spec["node"], self.id)
        preview = self.spec.get("preview")
        return shared + (segment.list_segments(preview + ".g") if preview else [])

    @staticmethod
    def _crew_statistics(kind: str, config: dict, spec: dict) -> split.CrewStatistics | None:
        """The per-worker figures of a pipeline that splits its frames among workers."""
        if kind != "pipeline":
            return None
        try:
            workers = split.parse(config).workers
        except ValueError:
            return None
        return (
            split.CrewStatistics(spec["node"], spec["instance_id"], workers)
            if workers > 1
            else None
        )

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def holds_port(self) -> bool:
        """Its port stays reserved while it runs or is to be restarted."""
        return self.alive or self.restart_at is not None or self.permanent

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
        process = self.process
        if process is None:
            return self.exit_code
        code = process.poll()
        if code is not None and self.exit_code is None:
            self.exit_code = code
            self.pids.forget(process.pid)
            if self.program is not None:
                self.pids.forget(self.program.pid)
            self.link.close()
        return code

    # --- config updates --------------------------------------------------------------------
    def update_config(self, config: dict, timeout: float) -> None:
        """Send a config update and wait until the instance applied it. BadRequest if it
        refused it; Unavailable if it did not answer in time (the update is then withdrawn,
        superseded by the config in force: nothing changed). One update waits at a time:
        another one meanwhile is answered at once (Unavailable), so that an instance that does
        not read its updates holds at most one request thread."""
        with self._acks:
            if self._waiting or self._silent_since is not None:
                raise Unavailable(
                    f"{self.kind} {self.id} has not answered the previous config update yet; "
                    f"try again"
                )
            self._waiting = True
            self._seq += 1
            seq = self._seq
            self._pending[seq] = config
        self.link.send({"config": config, "seq": seq}, replaces="config")
        deadline = time.monotonic() + timeout
        with self._acks:
            try:
                while seq not in self._answers:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self.alive:
                        break
                    self._acks.wait(min(left, 0.2))
                if seq in self._answers:
                    refusal = self._answers.pop(seq)
                    if refusal is not None:
                        raise BadRequest(f"{self.kind} {self.id} refused the update: {refusal}")
                    return
                self._pending.pop(seq, None)
                self._seq += 1
                current = self._seq
                self._pending[current] = self.config
                self._silent_since = time.monotonic()  # the next updates fail at once
            finally:
                self._waiting = False
        self.link.send({"config": self.config, "seq": current}, replaces="config")
        raise Unavailable(
            f"{self.kind} {self.id} did not take the update within {timeout:g} s (is its "
            f"function stuck?); nothing was changed"
        )

    def _acknowledged(self, seq: int, refusal: str | None) -> None:
        with self._acks:
            config = self._pending.pop(seq, None)
            for older in [s for s in self._pending if s < seq]:
                del self._pending[older]  # superseded: the instance never applies them
            if refusal is None and config is not None:
                self.config = config
            self._answers[seq] = refusal
            self._silent_since = None  # it reads its updates again
            for old in [s for s in self._answers if s < seq - 100]:
                del self._answers[old]
            self._acks.notify_all()

    # --- reports and logs (called in the hub's thread) ----------------------------------------
    def _on_report(self, report: dict) -> None:
        if "ready" in report:
            ready = report["ready"] if isinstance(report["ready"], dict) else {}
            self.output_file = ready.get("output_file")
            self.stream_ipc = ready.get("stream_ipc")  # a camera with protocol: ipc
            self._ready.set()
        if "error" in report:
            self.last_error = str(report["error"])
        if "finished" in report:
            self.finished = str(report["finished"])
        if "online" in report:
            self.online = (bool(report["online"]), str(report.get("reason", "")))
        if isinstance(report.get("program"), dict):
            self._program_started(report["program"].get("pid"))
        if "progress" in report:
            self.progress_ns = time.time_ns()
        if "config_applied" in report:
            self._acknowledged(_seq(report["config_applied"]), None)
        if "config_refused" in report:
            self._acknowledged(_seq(report["config_refused"]), str(report.get("error")))
        if isinstance(report.get("log"), dict):
            self._log_record(report["log"])

    def _program_started(self, pid) -> None:
        """An external pipeline's program: it must be a child of the instance process (a
        report cannot make the supervisor watch or kill anything else)."""
        try:
            program = psutil.Process(_seq(pid))
            if program.ppid() != self.pid:
                raise psutil.NoSuchProcess(program.pid)
        except (psutil.Error, ValueError):
            log.warning(
                "%s %s reported a program that is not its child: %r", self.kind, self.id, pid
            )
            return
        self.program = program
        self.pids.record(program.pid, "program", self.id)

    def _log_record(self, entry: dict) -> None:
        """A worker's log record: its own level and time, under the instance's logger."""
        level = str(entry.get("level", "INFO"))
        levelno = logging.getLevelName(level)
        created = entry.get("time")
        if not isinstance(created, (int, float)) or not math.isfinite(created):
            created = time.time()
        message = f"{entry.get('name', '?')}: {entry.get('message', '')}"
        self._add_log(
            created, level, levelno if isinstance(levelno, int) else logging.INFO, message
        )

    def _on_output(self, stream: str, line: str) -> None:
        """A line the process printed (user code, a crash dump): text in the instance log."""
        level = "INFO" if stream == "stdout" else "WARNING"
        self._add_log(time.time(), level, logging.getLevelName(level), f"{stream}: {line}")

    def _add_log(self, created: float, level: str, levelno: int, message: str) -> None:
        name = f"shmcam.instance.{self.id}"
        self.logs.append({"time": created, "level": level, "name": name, "message": message})
        record = logging.makeLogRecord(
            {
                "name": name,
                "levelname": level,
                "levelno": levelno,
                "msg": message,
                "created": created,
                "msecs": (created % 1) * 1000,
            }
        )
        logging.getLogger(name).handle(record)

    def _last_log(self) -> str | None:
        return self.logs[-1]["message"] if self.logs else None

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

    def progressed_within(self, seconds: float) -> bool:
        """Whether its main loop updated its statistics within the last `seconds` (every
        instance does twice a second while it is not stuck); for an external pipeline,
        whether its process reported progress of the program (the program's own updates
        of the statistics only tell when it last processed something, not that it is
        stuck)."""
        if "program" in self.spec:
            updated = self.progress_ns or 0
        else:
            updated = self.counters().get("updated_ns", 0)
        return not updated or time.time_ns() - updated < seconds * 1e9

    def update_rates(self) -> None:
        """Frames/s in and out, and CPU, since the last call (the manager's watchdog calls this
        periodically, so every reader of the statistics sees the same figures)."""
        if self.alive and self._psutil is not None:
            cpu, memory = 0.0, 0
            for process in (self._psutil, self.program):
                try:
                    if process is not None:
                        cpu += process.cpu_percent()
                        memory += process.memory_info().rss
                except psutil.Error:
                    pass
            self._cpu, self._memory = cpu, memory
        now, counters = time.monotonic(), self.counters()
        then, before, _ = self._rates
        rates = {
            k: (counters[k] - before.get(k, counters[k])) / max(1e-3, now - then)
            for k in ("frames_in", "frames_out", "bytes_in")
            if k in counters
        }
        self._rates = (now, counters, rates)
        if self._crew is not None:
            self._crew.update()

    def statistics(self) -> dict:
        """CamServer's statistics keys, plus shmcam's richer ones."""
        counters = self.counters()
        rates = self._rates[2]
        cpu, memory = (self._cpu, self._memory) if self.alive else (None, None)
        clients, forwarded = counters.get("clients", 0), counters.get("forwarder_clients", 0)
        height, width = counters.get("frame_height"), counters.get("frame_width")
        return {
            "total_bytes": counters.get("bytes_in", 0),  # CamServer's: bytes received
            # CamServer's: "N + M" with a DataBuffer feed (forwarder_port)
            "clients": f"{clients} + {forwarded}" if self.config.get("forwarder_port") else clients,
            "stream_clients": clients,
            "forwards": forwarded,
            "throughput": rates.get("bytes_in", 0.0),  # bytes received per second
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "fps_in": rates.get("frames_in", 0.0),
            "fps_out": rates.get("frames_out", 0.0),
            "rx": f"{rates.get('frames_in', 0.0):.1f}Hz - {counters.get('frames_in', 0)}",
            "tx": f"{rates.get('frames_out', 0.0):.1f}Hz - {counters.get('frames_out', 0)}",
            "pid": self.pid,
            "cpu": cpu,
            "memory": memory,
            "header_changes": counters.get("header_changes"),
            # CamServer's "WxHxbytes", and shmcam's [height, width] (numpy order)
            "frame_shape": (
                f"{width}x{height}x{counters.get('frame_itemsize', 0)}" if height else None
            ),
            "frame_size": [height, width] if height else None,
            "dropped": counters.get("dropped", 0),
            "torn": counters.get("torn", 0),
            "errors": counters.get("errors", 0),
            "lag": counters.get("lag", 0),
            "ring_fill": self._ring_fill(counters),
            "processing_ms_p50": counters.get("proc_ms_p50"),
            "processing_ms_p99": counters.get("proc_ms_p99"),
            "restarts": self.restarts,
            "workers": (
                self._crew.snapshot(threads=not self.config.get("multiprocessing"))
                if self._crew is not None
                else None
            ),
            "control_pending": self.link.pending if self.link is not None and self.alive else 0,
        }

    def _ring_fill(self, counters: dict) -> float | None:
        """How much of its camera's ring a pipeline has yet to read (1.0: the next frame
        drops); None when it reads no ring."""
        if self.kind != "pipeline" or not self.spec["ring"] or self.spec.get("input"):
            return None
        return round(min(1.0, counters.get("lag", 0) / self.spec["ring_slots"]), 3)

    def info(self) -> dict:
        """CamServer's instance info (a camera's with its geometry), and shmcam's keys."""
        statistics = self.statistics()
        extra = {}
        if self.kind == "camera":
            height, width = statistics["frame_size"] or (None, None)
            extra["camera_geometry"] = [width, height] if height else None
        return {
            **extra,
            "stream_address": self.stream,
            "is_stream_active": self.alive,
            "state": self.state,
            "camera_name": self.config.get(
                "camera_name", self.id if self.kind == "camera" else None
            ),
            "config": self.config,
            "instance_id": self.id,
            "read_only": self.read_only,
            "shared": self.shared,
            "last_start_time": (
                time.strftime("%Y-%m-%d %H:%M:%S UTC%z", time.localtime(self.start_time))
                if self.start_time
                else None
            ),
            "statistics": statistics,
            "started": self.start_time,  # shmcam's: epoch seconds of the last start
            "exit_code": self.exit_code,
            "last_error": self.last_error,
            "permanent": self.permanent,
            "output_file": self.output_file,
            "stream_ipc": self.stream_ipc,
        }


def _seq(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1
