"""What one supervisor of a node leaves to the next: a lock, and the pids of its instances.

Only one supervisor may run a node: its segments (`shmcam.<node>.*`) are named by node, so a
second one starting with the same name would remove a live node's shared memory. The lock is a
file in /dev/shm named by node (the namespace the segments share, whatever the run directory),
held with flock for the supervisor's life: the kernel drops it when the process dies, however.

Instances die with their supervisor (workers/__main__.py), but one started by an older release
or stuck in an uninterruptible call may outlive it, holding its port and a segment. Every
instance started is recorded in `<run_dir>/<node>/pids/<pid>` with its start time (a pid may be
reused), so that the next supervisor ends what is left before it removes stale segments.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
from pathlib import Path

import psutil

from shmcam.shm.segment import SHM_DIR

log = logging.getLogger(__name__)


class NodeBusy(RuntimeError):
    """Another supervisor runs this node."""


class NodeLock:
    def __init__(self, node: str):
        self.path = SHM_DIR / f"shmcam-lock.{node}"
        self.node = node
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise NodeBusy(
                f"node {self.node} is already run by another supervisor (pid {holder}); "
                f"stop it first, or give this one another node name"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still holding it: a new one re-creates
            os.close(self._fd)
            self._fd = None


class PidFiles:
    def __init__(self, run_dir: Path, node: str):
        self.directory = Path(run_dir) / node / "pids"

    def record(self, pid: int, kind: str, instance_id: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            started = psutil.Process(pid).create_time()
        except psutil.Error:
            return  # already gone
        entry = {"pid": pid, "started": started, "kind": kind, "instance": instance_id}
        (self.directory / str(pid)).write_text(json.dumps(entry))

    def forget(self, pid: int) -> None:
        (self.directory / str(pid)).unlink(missing_ok=True)

    def end_predecessors(self, grace: float = 2.0) -> list[str]:
        """Kill the instances a previous supervisor left running; what was ended, by name."""
        if not self.directory.is_dir():
            return []
        left = []
        for path in self.directory.iterdir():
            try:
                entry = json.loads(path.read_text())
                process = psutil.Process(int(entry["pid"]))
                if abs(process.create_time() - float(entry["started"])) > 0.01:
                    raise psutil.NoSuchProcess(process.pid)  # the pid was reused
                if process.status() == psutil.STATUS_ZOMBIE:
                    raise psutil.NoSuchProcess(process.pid)  # dead, waiting to be reaped
                left.append((process, f"{entry['kind']} {entry['instance']} (pid {process.pid})"))
            except (ValueError, KeyError, TypeError, OSError, psutil.Error):
                pass
            path.unlink(missing_ok=True)
        for process, _ in left:
            _signal(process, signal.SIGTERM)
        _, alive = psutil.wait_procs([p for p, _ in left], timeout=grace)
        for process in alive:
            _signal(process, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=grace)
        return [name for _, name in left]


def _signal(process: psutil.Process, sig: int) -> None:
    try:
        process.send_signal(sig)
    except psutil.Error:
        pass
