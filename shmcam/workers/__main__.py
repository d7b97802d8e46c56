"""`python -m shmcam.workers KIND`: the entry point of an instance process.

Started by the supervisor as a clean interpreter (never forked from the daemon), with its
control and report channels (control.py). The instance dies with its supervisor: the kernel
kills it when the supervisor's spawning thread ends (PR_SET_PDEATHSIG), however stuck it is,
and a crash in C code leaves its Python stack in the instance log (faulthandler).
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import resource
import signal
import sys

from shmcam.camserver import alias

from . import camera, pipeline
from .control import Control, ReportHandler, report

KINDS = {"camera": camera.run, "pipeline": pipeline.run}
PARENT = "SHMCAM_SUPERVISOR_PID"
MEMORY_LIMIT = "SHMCAM_MEMORY_LIMIT"  # bytes of address space
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGKILL when the parent goes; exit now if it is already gone (it died before this)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    expected = os.environ.get(PARENT)
    if expected is not None and os.getppid() != int(expected):
        raise SystemExit("the supervisor that started this instance is gone")


def limit_memory() -> None:
    """The node's instance_memory_mb: a user function asking for more gets MemoryError."""
    limit = int(os.environ.get(MEMORY_LIMIT, "0"))
    if limit > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main() -> int:
    kind = sys.argv[1] if len(sys.argv) == 2 else None
    if kind not in KINDS:
        print(f"usage: python -m shmcam.workers {{{','.join(KINDS)}}}", file=sys.stderr)
        return 2
    die_with_parent()
    limit_memory()
    faulthandler.enable()  # to stderr, which the supervisor keeps in the instance log
    logging.basicConfig(level=logging.INFO, handlers=[ReportHandler()], force=True)
    alias.install()  # user code written for CamServer imports cam_server.*
    control, spec = Control.from_environment()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    signal.signal(signal.SIGTERM, lambda *_: control.stop.set())
    try:
        return KINDS[kind](spec, control)
    except Exception as error:
        logging.getLogger("shmcam.workers").exception("%s instance failed", kind)
        report(error=f"{type(error).__name__}: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
