"""A real supervisor process for tests: free ports, temporary data dir, REST client helpers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from shmcam.bsread import Receiver
from shmcam.shm import segment

SIM_CAMERA = {"source_type": "simulation", "size_x": 320, "size_y": 240, "frame_rate": 50}


def wait_for(condition, timeout=20.0, what="condition"):
    """Poll condition() until it returns something true (returned) or fail after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def counted(call, instance: str, key: str = "tx") -> int:
    """Frames in (`rx`) or out (`tx`) of a pipeline instance so far, from CamServer's
    "<rate>Hz - <count>"; `call` is a harness's (a node's or the coordinator's)."""
    info = call("GET", f"/api/v1/pipeline/instance/{instance}/info")["info"]
    return int(info["statistics"][key].split(" - ")[1])


def receive(stream, count=1, timeout=5.0, mode="SUB") -> list:
    """count messages from a bsread stream; fails if it goes silent for timeout seconds."""
    with Receiver(stream, mode=mode, timeout=timeout) as receiver:
        messages = []
        while len(messages) < count:
            message = receiver.receive()
            assert message is not None, f"stream {stream} went silent"
            messages.append(message)
        return messages


def free_port_block(size: int) -> int:
    """The first port of `size` consecutive ports that are free now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + size < 65000 and all(_free(p) for p in range(first, first + size)):
            return first
    raise RuntimeError("no block of free ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


class Supervisor:
    """`shmcam supervisor` in a subprocess, with the node config written for the test."""

    command = "supervisor"
    launcher: list[str] = []  # e.g. ["ip", "netns", "exec", "ns1"]: run it in a namespace

    def __init__(
        self,
        tmp: Path,
        node: str,
        cameras: dict | None = None,
        token: str | None = None,
        permanent: dict | None = None,
        pipelines: dict | None = None,
        settings: dict | None = None,
    ):
        """`settings`: node settings over the test's defaults, which let tests upload code
        without a token (allow_anonymous_code) unless they say otherwise."""
        tmp.mkdir(parents=True, exist_ok=True)
        self.node = node
        self.data_dir = tmp / "data"
        ports = free_port_block(24)
        self.rest_port = ports
        config = {
            "node": node,
            "public_host": "127.0.0.1",
            "rest_host": "127.0.0.1",
            "rest_port": ports,
            "camera_ports": [ports + 1, ports + 8],
            "pipeline_ports": [ports + 9, ports + 23],
            "data_dir": str(self.data_dir),
            "config_dir": str(tmp / "etc"),
            "ring_slots": 8,
            "run_dir": str(tmp / "run"),
            "allow_anonymous_code": True,
            **(settings or {}),
        }
        if token:
            (tmp / "token").write_text(token + "\n")
            config["token_file"] = str(tmp / "token")
        if permanent:
            config["permanent"] = permanent
        self.config_file = tmp / "shmcam.toml"
        self.config_file.write_text(_toml(config))
        self.host = config["rest_host"]
        for folder, configs in (("cameras", cameras), ("pipelines", pipelines)):
            for name, entry in (configs or {}).items():
                (self.data_dir / folder).mkdir(parents=True, exist_ok=True)
                (self.data_dir / folder / f"{name}.json").write_text(json.dumps(entry))
        self.url = f"http://{self.host}:{ports}"
        self.token = token
        self.process: subprocess.Popen | None = None
        self.log_file = tmp / "supervisor.log"

    def start(self) -> Supervisor:
        self._log = open(self.log_file, "a")
        self.process = subprocess.Popen(
            [
                *self.launcher,
                sys.executable,
                "-m",
                "shmcam.cli.main",
                self.command,
                "--config",
                str(self.config_file),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command} exited: {self.log()}")
            try:
                requests.get(self.url + "/api/v1/cam/version", timeout=1)
                return self
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.05)
        raise RuntimeError(f"{self.command} did not answer: {self.log()}")

    def log(self) -> str:
        return self.log_file.read_text()

    def call(self, method: str, path: str, expect: int = 200, **kwargs) -> dict:
        headers = kwargs.pop("headers", {})
        if self.token and method != "GET":
            headers.setdefault("Authorization", f"Bearer {self.token}")
        response = requests.request(method, self.url + path, headers=headers, timeout=60, **kwargs)
        assert response.status_code == expect, (response.status_code, response.text)
        if response.headers.get("content-type", "").startswith("application/json"):
            data = response.json()
            assert data["state"] == ("ok" if expect < 400 else "error"), data
            return data
        return {"raw": response.content}

    def ended(self, instance_id: str) -> dict | None:
        """The account of an ended pipeline instance (its exitcode route), None while it runs."""
        report = self.call("GET", f"/api/v1/pipeline/instance/{instance_id}/exitcode")
        return report if report["exitcode"] is not None else None

    def log_lines(self, instance: str | None = None) -> list[str]:
        """The node's recent log (or an instance's) as text lines."""
        path = "/api/v1/logs/txt" if instance is None else f"/api/v1/logs/instance/{instance}/txt"
        return requests.get(self.url + path, timeout=30).text.splitlines()

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def instance_pids(self) -> list[int]:
        """Processes of this supervisor's instances (its direct children)."""
        import psutil

        try:
            return [c.pid for c in psutil.Process(self.process.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def segments(self) -> list[str]:
        return segment.list_segments(f"shmcam.{self.node}.")


def _toml(config: dict) -> str:
    lines, tables = [], []
    for key, value in config.items():
        if isinstance(value, dict):
            tables.append(
                f"[{key}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in value.items())
            )
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n" + "\n".join(tables)
