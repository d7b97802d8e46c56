#!/usr/bin/env python3
"""Issue 11's failure scenarios against a node, measured: run it with the Python of the
release to measure (`--python /path/to/venv/bin/python`), e.g. once for an older checkout and
once for this one, to compare before and after. Only REST and processes are used, so any
release of the supervisor can be measured.

1. HEAD on a config route without the token: does the config survive?
2. A script upload on a node without a token.
3. GET .../info while 150 idle connections and 12 slow image reads are open: seconds.
4. 200 live config updates to a pipeline stuck in C code: seconds for them, then for info.
5. SIGTERM of the supervisor with 3 instances stuck in C code: seconds to exit.
6. SIGKILL of the supervisor: instance processes still alive 3 s later.

    python bench/hardening.py [--python PY] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

from shmcam.shm import segment

TOKEN = "bench-token"
CAMERA = {
    "source_type": "simulation",
    "size_x": 320,
    "size_y": 240,
    "frame_rate": 50,
    "no_client_timeout": 0,
}
SILENT = {"source_type": "bsread", "source": "tcp://127.0.0.1:9"}  # older releases' name
SILENT_NEW = {"source_type": "bschannel", "source": "tcp://127.0.0.1:9"}
STUCK = b"""
import re
calls = 0

def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters):
    global calls
    calls += 1
    if calls > 3:
        re.match(r"(a+)+$", "a" * 64 + "b")
    return {"calls": calls}
"""


def open_to_code(python: str) -> dict:
    """Node settings that let anyone upload code, on releases that ask for it."""
    probe = subprocess.run(
        [
            python,
            "-c",
            "from shmcam.supervisor.settings import Settings; "
            "print('allow_anonymous_code' in Settings.__dataclass_fields__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return {"allow_anonymous_code": True} if probe.stdout.strip() == "True" else {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, python: str, tmp: Path, token: str | None, **settings):
        tmp.mkdir(parents=True)
        self.port = free_port()
        base = free_port()
        self.name = f"bench{os.getpid()}x{base}"
        config = {
            "node": self.name,
            "public_host": "127.0.0.1",
            "rest_host": "127.0.0.1",
            "rest_port": self.port,
            "camera_ports": [base + 1, base + 20],
            "pipeline_ports": [base + 21, base + 60],
            "data_dir": str(tmp / "data"),
            "config_dir": str(tmp / "etc"),
            **settings,
        }
        if token:
            (tmp / "token").write_text(token)
            config["token_file"] = str(tmp / "token")
        (tmp / "shmcam.toml").write_text(
            "".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items())
        )
        cameras = tmp / "data" / "cameras"
        cameras.mkdir(parents=True)
        for name, camera in (("sim", CAMERA), ("silent", SILENT), ("silentnew", SILENT_NEW)):
            (cameras / f"{name}.json").write_text(json.dumps(camera))
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.process = subprocess.Popen(
            [python, "-m", "shmcam.cli.main", "supervisor", "--config", str(tmp / "shmcam.toml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(self.url + "/api/v1/cam/version", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("the supervisor did not start")

    def call(self, method, path, **kwargs):
        return requests.request(
            method, self.url + path, headers=self.headers, timeout=120, **kwargs
        )

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def head_bypass(python, tmp) -> dict:
    node = Node(python, tmp, TOKEN)
    try:
        node.call("POST", "/api/v1/pipeline/kept/config", json={"camera_name": "sim"})
        status = requests.head(node.url + "/api/v1/pipeline/kept/config", timeout=10).status_code
        survives = node.call("GET", "/api/v1/pipeline/kept/config").status_code == 200
        return {"head_status": status, "config_survives": survives}
    finally:
        node.stop()


def anonymous_code(python, tmp) -> dict:
    node = Node(python, tmp, None)
    try:
        status = node.call("PUT", "/api/v1/pipeline/script/x.py/script_bytes", data=b"X = 1\n")
        return {"upload_status": status.status_code}
    finally:
        node.stop()


def starvation(python, tmp) -> dict:
    node = Node(python, tmp, None, **open_to_code(python))
    idle = []
    try:
        camera = (
            "silentnew"
            if node.call("GET", "/api/v1/cam/silentnew/config").json()["state"] == "ok"
            and node.call("GET", "/api/v1/cam/silentnew").status_code == 200
            else "silent"
        )
        idle = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(150)]
        slow = [
            threading.Thread(
                target=lambda: requests.get(f"{node.url}/api/v1/cam/{camera}/image", timeout=30),
                daemon=True,
            )
            for _ in range(12)
        ]
        for thread in slow:
            thread.start()
        time.sleep(0.5)
        return {"info_seconds": info_seconds(node)}
    finally:
        for connection in idle:
            connection.close()
        node.stop()


def info_seconds(node) -> float | None:
    """How long the node takes to answer GET /api/v1/pipeline/info (None: not in 15 s)."""
    started = time.monotonic()
    try:
        requests.get(node.url + "/api/v1/pipeline/info", timeout=15)
    except requests.RequestException:
        return None
    return time.monotonic() - started


def stuck_updates(python, tmp) -> dict:
    node = Node(python, tmp, None, **open_to_code(python))
    try:
        node.call("PUT", "/api/v1/pipeline/script/stuck.py/script_bytes", data=STUCK)
        node.call(
            "POST",
            "/api/v1/pipeline",
            params={"instance_id": "stuck"},
            json={"camera_name": "sim", "function": "stuck", "no_client_timeout": 0},
        )
        time.sleep(1.5)
        started = time.monotonic()
        done = [0]

        def update():
            for n in range(200):
                node.call(
                    "POST",
                    "/api/v1/pipeline/instance/stuck/config",
                    json={"x": n, "pad": "p" * 4000},
                )
                done[0] += 1

        worker = threading.Thread(target=update, daemon=True)
        worker.start()
        worker.join(60)
        updates = time.monotonic() - started if not worker.is_alive() else None
        return {
            "updates_answered": done[0],
            "updates_seconds": updates,
            "info_seconds": info_seconds(node),
        }
    finally:
        node.stop()


def stuck_shutdown(python, tmp) -> dict:
    node = Node(python, tmp, None, **open_to_code(python))
    node.call("PUT", "/api/v1/pipeline/script/stuck.py/script_bytes", data=STUCK)
    for n in range(3):
        node.call(
            "POST",
            "/api/v1/pipeline",
            params={"instance_id": f"stuck{n}"},
            json={"camera_name": "sim", "function": "stuck", "no_client_timeout": 0},
        )
    time.sleep(1.5)
    started = time.monotonic()
    node.process.send_signal(signal.SIGTERM)
    try:
        node.process.wait(120)
        took = time.monotonic() - started
    except subprocess.TimeoutExpired:
        took = None
        os.killpg(node.process.pid, signal.SIGKILL)
    return {"sigterm_to_exit_seconds": took}


def orphans(python, tmp) -> dict:
    node = Node(python, tmp, None, **open_to_code(python))
    node.call("PUT", "/api/v1/pipeline/script/stuck.py/script_bytes", data=STUCK)
    node.call(
        "POST",
        "/api/v1/pipeline",
        params={"instance_id": "stuck"},
        json={"camera_name": "sim", "function": "stuck", "no_client_timeout": 0},
    )
    node.call(
        "POST",
        "/api/v1/pipeline",
        params={"instance_id": "fine"},
        json={"camera_name": "sim", "no_client_timeout": 0},
    )
    time.sleep(1.5)
    children = node.children()
    node.process.send_signal(signal.SIGKILL)
    node.process.wait()
    time.sleep(3)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    for c in alive:
        c.kill()
    # What the killed supervisor left is a successor's to clean up; none comes here.
    for name in segment.list_segments(f"shmcam.{node.name}."):
        segment.unlink(name)
    Path(f"/dev/shm/shmcam-lock.{node.name}").unlink(missing_ok=True)
    return {"instances": len(children), "alive_3s_after_sigkill": len(alive)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-hardening-"))
    report = {}
    for name, scenario in (
        ("head_bypass", head_bypass),
        ("anonymous_code", anonymous_code),
        ("starvation", starvation),
        ("stuck_updates", stuck_updates),
        ("stuck_shutdown", stuck_shutdown),
        ("orphans", orphans),
    ):
        report[name] = scenario(args.python, tmp / name)
    print(json.dumps(report, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
