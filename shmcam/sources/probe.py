"""Is a camera online? Asked without starting its camera instance (CamServer's
verify_camera_online, behind GET /api/v1/cam/<camera>/is_online and before a stream starts).

`python -m shmcam.sources.probe [--camera NAME] [--camera-scripts-dir DIR] [--timeout S]` reads
the camera config as JSON on stdin and prints `{"online": bool, "reason": str}`. An EPICS
camera is connected and its INIT read; streams are not probed (a PULL connection would take
frames from the camera's reader), see each source's `probe`. The probe runs in a short-lived
process: the supervisor never loads pyepics (docs/pitfalls.md). `is_online` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from .base import Context
from .config import parse, source_class

DEFAULT_TIMEOUT = 2.0
# Sources whose online state is checked before an on-demand start (CamServer's
# verify_camera_online: the EPICS cameras); the others are checked when they run.
VERIFIED_BEFORE_START = ("epics", "area_detector", "bsread")
STARTUP = 5.0  # seconds a probe process may take beyond its timeout (interpreter, pyepics)


def probe(config: dict, context: Context, timeout: float = DEFAULT_TIMEOUT) -> tuple[bool, str]:
    """(online, reason), in this process."""
    try:
        config = parse(config)
    except ValueError as error:
        return False, f"invalid camera config: {error}"
    try:
        online, reason = source_class(config).probe(config, context, timeout)
    except Exception as error:
        return False, f"{type(error).__name__}: {error}"
    return bool(online), str(reason)


def is_online(
    config: dict,
    camera: str,
    camera_scripts_dir: Path | str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[bool, str]:
    """(online, reason) from a probe process, within timeout plus its start-up time."""
    command = [sys.executable, "-m", "shmcam.sources.probe", "--camera", camera]
    command += ["--timeout", str(timeout)]
    if camera_scripts_dir is not None:
        command += ["--camera-scripts-dir", str(camera_scripts_dir)]
    try:
        done = subprocess.run(
            command,
            input=json.dumps(config),
            capture_output=True,
            text=True,
            timeout=timeout + STARTUP,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        answer = json.loads(done.stdout)
        return bool(answer["online"]), str(answer["reason"])
    except subprocess.TimeoutExpired:
        return False, f"the probe of camera {camera} did not answer within {timeout + STARTUP} s"
    except (ValueError, KeyError, TypeError):
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        return False, f"the probe of camera {camera} failed: {tail[0]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--camera", default="camera", help="the camera's name")
    parser.add_argument("--camera-scripts-dir", type=Path, help="uploaded camera scripts")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds")
    args = parser.parse_args()
    from shmcam.camserver import alias

    alias.install()  # camera scripts written for CamServer import cam_server.*
    try:
        config = json.load(sys.stdin)
    except ValueError as error:
        online, reason = False, f"the camera config is not JSON: {error}"
    else:
        context = Context(args.camera, args.camera_scripts_dir)
        online, reason = probe(config, context, args.timeout)
    print(json.dumps({"online": online, "reason": reason}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
