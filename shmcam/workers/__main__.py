"""`python -m shmcam.workers KIND`: the entry point of an instance process.

Started by the supervisor as a clean interpreter (never forked from the daemon), with the
instance spec as the first line on stdin (see control.py).
"""

from __future__ import annotations

import logging
import signal
import sys

from shmcam.camserver import alias

from . import camera, pipeline
from .control import Control, read_spec, report

KINDS = {"camera": camera.run, "pipeline": pipeline.run}


def main() -> int:
    kind = sys.argv[1] if len(sys.argv) == 2 else None
    if kind not in KINDS:
        print(f"usage: python -m shmcam.workers {{{','.join(KINDS)}}}", file=sys.stderr)
        return 2
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    alias.install()  # user code written for CamServer imports cam_server.*
    spec = read_spec()
    control = Control()
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
