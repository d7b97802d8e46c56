"""The workers of a parallel pipeline, as processes or threads: started, watched, restarted.

A worker process is `python -m shmcam.workers.member`, a clean interpreter (never forked
from the threaded pipeline), killed by the kernel if the pipeline dies (PR_SET_PDEATHSIG);
its log records come back on its stdout and go into the pipeline's log with its number. A
worker that dies (killed, crashed in C) is restarted after the delays of restarts.py, the
instance goes on; the pipeline counts the frame it held as dropped (parallel.py).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time

from shmcam.restarts import RestartPolicy
from shmcam.shm.board import Board

from .control import CONTROL_FD, REPORT_FD
from .member import Member, ThreadOutbox

log = logging.getLogger(__name__)

STOP_WAIT = 3.0  # seconds a worker process gets to end before it is killed


class Crew:
    """What processes and threads share: restarts by policy, deaths reported once."""

    def __init__(self, spec: dict, board: Board, count: int):
        self.spec, self.board, self.count = spec, board, count
        self.restarts = [0] * count
        self.policies = [RestartPolicy() for _ in range(count)]
        self.restart_at: list[float | None] = [None] * count
        self.stopping = False

    def start_all(self) -> None:
        for member in range(self.count):
            self._start(member)

    def _start(self, member: int) -> None:
        self.board.reset_member(member)
        self.restart_at[member] = None
        self.policies[member].started()
        pid = self.launch(member)
        self.board.set_member_info(member, pid, self.restarts[member])

    def died(self) -> list[int]:
        """Workers found dead since the last call; each is restarted after its delay."""
        now, dead = time.monotonic(), []
        for member in range(self.count):
            if self.restart_at[member] is None and not self.alive(member):
                delay = self.policies[member].next_delay()
                log.error(
                    "worker %d died (%s): restarting it in %.1f s",
                    member,
                    self.epitaph(member),
                    delay,
                )
                self.restart_at[member] = now + delay
                dead.append(member)
        return dead

    def restart_due(self) -> None:
        now = time.monotonic()
        for member, due in enumerate(self.restart_at):
            if due is not None and now >= due and not self.stopping:
                self.restarts[member] += 1
                self._start(member)

    def waiting_restart(self) -> bool:
        return any(due is not None for due in self.restart_at)

    def next_restart(self) -> float:
        """Seconds until the next restart is due (inf: none)."""
        due = [d for d in self.restart_at if d is not None]
        return max(0.0, min(due) - time.monotonic()) if due else math.inf

    def launch(self, member: int) -> int:
        raise NotImplementedError

    def alive(self, member: int) -> bool:
        raise NotImplementedError

    def epitaph(self, member: int) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        self.stopping = True
        self.board.stop()


class ProcessCrew(Crew):
    def __init__(self, spec: dict, board: Board, count: int):
        super().__init__(spec, board, count)
        self.procs: list[subprocess.Popen | None] = [None] * count

    def launch(self, member: int) -> int:
        env = {k: v for k, v in os.environ.items() if k != CONTROL_FD}
        env.update(
            {
                REPORT_FD: "1",  # its log records, as report lines on its stdout
                "SHMCAM_SUPERVISOR_PID": str(os.getpid()),  # it dies with this process
                "PYTHONUNBUFFERED": "1",
            }
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "shmcam.workers.member"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
        proc.stdin.write(json.dumps({"spec": self.spec, "member": member}) + "\n")
        proc.stdin.close()
        threading.Thread(
            target=_forward, args=(proc.stdout, member), name=f"worker {member} log", daemon=True
        ).start()
        self.procs[member] = proc
        return proc.pid

    def alive(self, member: int) -> bool:
        proc = self.procs[member]
        return proc is not None and proc.poll() is None

    def epitaph(self, member: int) -> str:
        code = self.procs[member].returncode
        return f"signal {-code}" if code < 0 else f"exit code {code}"

    def pid(self, member: int) -> int | None:
        proc = self.procs[member]
        return proc.pid if proc is not None else None

    def stop(self) -> None:
        super().stop()
        procs = [p for p in self.procs if p is not None and p.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker process %d did not stop: killing it", proc.pid)
                proc.kill()
                proc.wait()


class ThreadCrew(Crew):
    """Workers as threads of the pipeline's process: worthwhile for functions that release
    the GIL (numba nogil kernels, most of numpy), which the standard function's kernels do."""

    def __init__(self, spec: dict, board: Board, count: int):
        super().__init__(spec, board, count)
        self.outboxes = [ThreadOutbox() for _ in range(count)]
        self.threads: list[threading.Thread | None] = [None] * count
        self.errors: list[str] = [""] * count
        self.stop_event = threading.Event()

    def launch(self, member: int) -> int:
        thread = threading.Thread(target=self._run, args=(member,), name=f"worker {member}")
        self.threads[member] = thread
        thread.start()
        return os.getpid()

    def _run(self, member: int) -> None:
        worker = None
        try:
            worker = Member(self.spec, member, self.outboxes[member])
            worker.run(self.stop_event)
        except Exception as error:
            self.errors[member] = f"{type(error).__name__}: {error}"
            log.exception("worker %d failed", member)
        finally:
            if worker is not None:
                worker.close()

    def alive(self, member: int) -> bool:
        thread = self.threads[member]
        return thread is not None and thread.is_alive()

    def epitaph(self, member: int) -> str:
        return self.errors[member] or "ended"

    def stop(self) -> None:
        super().stop()
        self.stop_event.set()
        for thread in self.threads:
            if thread is not None:
                thread.join()


def _forward(stream, member: int) -> None:
    """A worker process's output into the pipeline's log: its log records as they were
    (level, time, logger), anything else it printed as text."""
    for line in stream:
        line = line.rstrip("\n")
        try:
            entry = json.loads(line)["log"]
            record = logging.makeLogRecord(
                {
                    "name": str(entry["name"]),
                    "levelno": logging.getLevelName(str(entry["level"])),
                    "levelname": str(entry["level"]),
                    "msg": f"worker {member}: {entry['message']}",
                    "created": float(entry["time"]),
                }
            )
        except (ValueError, KeyError, TypeError):
            record = logging.makeLogRecord(
                {"name": __name__, "levelno": logging.INFO, "levelname": "INFO",
                 "msg": f"worker {member}: {line}"}
            )  # fmt: skip
        if isinstance(record.levelno, int):
            logging.getLogger(record.name).handle(record)
    stream.close()
