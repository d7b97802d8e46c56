"""`shmcam demo`: a node supervisor with a simulated camera and a pipeline, live statistics.

Everything a user would set up by hand, in a temporary directory: the node config, a
simulation camera, a supervisor on a free port, a pipeline created through the REST API as a
CamServer client would, and a bsread client on the pipeline's stream. One status line a second
until Ctrl-C; then everything is stopped and removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from shmcam.bsread import Receiver

from .ring_demo import parse_size


def add_parser(commands) -> None:
    p = commands.add_parser(
        "demo", help="run a supervisor with a simulated camera and a pipeline", description=__doc__
    )
    p.add_argument("--size", default="1280x960", help="camera frame size WxH (default 1280x960)")
    p.add_argument("--rate", type=float, default=100.0, help="camera frames/s (default 100)")
    p.add_argument(
        "--seconds",
        type=float,
        default=0,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    p.set_defaults(run=run)


def rest(url: str, method: str = "GET", body: dict | None = None) -> dict:
    request = urllib.request.Request(
        url,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        raise SystemExit(f"{method} {url}: {json.load(error).get('status')}") from None


def start_supervisor(
    workdir: Path, size, rate: float, settings: str = ""
) -> tuple[subprocess.Popen, str]:
    """A supervisor with a simulated camera, in workdir; `settings`: more shmcam.toml lines."""
    (workdir / "data" / "cameras").mkdir(parents=True)
    (workdir / "data" / "cameras" / "simulation.json").write_text(
        json.dumps(
            {
                "source_type": "simulation",
                "size_x": size[0],
                "size_y": size[1],
                "frame_rate": rate,
                "no_client_timeout": 0,
            }
        )
    )
    (workdir / "shmcam.toml").write_text(
        f'node = "demo{os.getpid()}"\npublic_host = "127.0.0.1"\nrest_host = "127.0.0.1"\n'
        f'rest_port = 0\ndata_dir = "{workdir / "data"}"\nconfig_dir = "{workdir / "etc"}"\n'
        + settings
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shmcam.cli.main",
            "supervisor",
            "--config",
            str(workdir / "shmcam.toml"),
        ],
        stdout=subprocess.PIPE,
        stderr=open(workdir / "supervisor.log", "w"),
        text=True,
        start_new_session=True,
    )
    line = process.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        process.wait(10)
        raise SystemExit(
            "the supervisor did not start:\n" + (workdir / "supervisor.log").read_text()
        )
    return process, match.group(1)


def run(args) -> int:
    size = parse_size(args.size)
    workdir = Path(tempfile.mkdtemp(prefix="shmcam-demo-"))
    supervisor = None
    try:
        print(f"starting a supervisor in {workdir} ...", flush=True)
        supervisor, url = start_supervisor(workdir, size, args.rate)
        created = rest(
            f"{url}/api/v1/pipeline?instance_id=demo",
            "POST",
            {"camera_name": "simulation", "exclude": ["image"]},
        )
        stream = created["stream"]
        print(f"REST API:        {url}/api/v1/pipeline/info", flush=True)
        print(f"pipeline stream: {stream} (bsread, PUB)", flush=True)
        print(
            f"camera:          simulation {size[0]}x{size[1]} uint16 at {args.rate:g} Hz; "
            f"Ctrl-C to stop",
            flush=True,
        )
        watch(url, stream, args.seconds)
    except KeyboardInterrupt:
        pass
    finally:
        if supervisor is not None:
            supervisor.send_signal(signal.SIGTERM)
            supervisor.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)
    print("stopped; supervisor, instances and shared memory cleaned up")
    return 0


def watch(url: str, stream: str, seconds: float) -> None:
    """Receive the pipeline's stream and print a status line a second."""
    t_end = time.monotonic() + seconds if seconds > 0 else float("inf")
    with Receiver(stream, timeout=1.0) as receiver:
        received, last, next_line = 0, None, time.monotonic() + 1.0
        while time.monotonic() < t_end:
            message = receiver.receive()
            if message is not None:
                received, last = received + 1, message
            if time.monotonic() < next_line:
                continue
            next_line += 1.0
            info = rest(f"{url}/api/v1/pipeline/instance/demo/info")["info"]["statistics"]
            camera = rest(f"{url}/api/v1/cam/info")["info"]["active_instances"]
            cam_stats = next(iter(camera.values()))["statistics"] if camera else {}
            com = (
                f"x_com {last.data['x_center_of_mass']:7.1f} px"
                if last is not None and last.data.get("x_center_of_mass")
                else ""
            )
            p50 = info["processing_ms_p50"]
            print(
                f"camera {cam_stats.get('tx', '-'):>15} cpu {cam_stats.get('cpu') or 0:4.1f}% | "
                f"pipeline in {info['rx']:>15} out {info['tx']:>15} dropped {info['dropped']} "
                f"torn {info['torn']} errors {info['errors']} "
                f"proc {p50 or 0:5.2f} ms cpu {info['cpu'] or 0:4.1f}% | "
                f"client {received} msgs pulse {last.pulse_id if last else '-'} {com}",
                flush=True,
            )
