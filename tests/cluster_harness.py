"""A real cluster for tests: node supervisors on distinct loopback addresses (127.0.0.2, .3,
...; each with its own port ranges) and a real coordinator in front of them."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import requests
from supervisor_harness import Supervisor, _toml, free_port_block, wait_for

NODE_TOKEN = "node-token-for-tests"


class Coordinator(Supervisor):
    """`shmcam coordinator` in a subprocess, with its cluster.toml written for the test."""

    command = "coordinator"

    def __init__(
        self,
        tmp: Path,
        nodes: dict[str, dict],
        port: int | None = None,
        permanent: dict | None = None,
        token: str | None = None,
        cameras: dict | None = None,
        pipelines: dict | None = None,
        settings: dict | None = None,
    ):
        tmp.mkdir(parents=True, exist_ok=True)
        self.node = "coordinator"
        self.data_dir = tmp / "data"
        self.rest_port = port or free_port_block(1)
        self.host = "127.0.0.1"
        self.url = f"http://127.0.0.1:{self.rest_port}"
        (tmp / "node-token").write_text(NODE_TOKEN + "\n")
        config = {
            "host": "127.0.0.1",
            "port": self.rest_port,
            "data_dir": str(self.data_dir),
            "node_token_file": str(tmp / "node-token"),
            "node_timeout": 1.5,
            "poll_interval": 0.25,
            **(settings or {}),
            "nodes": nodes,
        }
        if token:
            (tmp / "token").write_text(token + "\n")
            config["token_file"] = str(tmp / "token")
        if permanent:
            config["permanent"] = permanent
        self.config_file = tmp / "cluster.toml"
        self.config_file.write_text(_cluster_toml(config))
        for folder, configs in (("cameras", cameras), ("pipelines", pipelines)):
            for name, entry in (configs or {}).items():
                (self.data_dir / folder).mkdir(parents=True, exist_ok=True)
                (self.data_dir / folder / f"{name}.json").write_text(json.dumps(entry))
        self.token = token
        self.process = None
        self.log_file = tmp / "coordinator.log"

    def segments(self) -> list[str]:
        return []


def _cluster_toml(config: dict) -> str:
    nodes = config.pop("nodes")
    permanent = config.pop("permanent", None)
    text = _toml(config)
    for name, rule in nodes.items():
        text += f"\n[nodes.{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in rule.items())
    if permanent:
        text += "\n[permanent]\n" + "".join(
            f"{k} = {json.dumps(v)}\n" for k, v in permanent.items()
        )
    return text


class Cluster:
    """n nodes and a coordinator; `nodes[name]` is a Supervisor, `coordinator` the front."""

    def __init__(
        self,
        tmp: Path,
        node: str,
        count: int = 3,
        rules: dict | None = None,
        hosts: dict | None = None,
        launchers: dict | None = None,
        **coordinator,
    ):
        """`hosts` and `launchers` by node index: another address (default 127.0.0.2,
        .3, ...) and a command to run the node in (a network namespace)."""
        self.nodes: dict[str, Supervisor] = {}
        coordinator_port = free_port_block(1)
        for i in range(count):
            name = f"{node}x{i}"
            host = (hosts or {}).get(i, f"127.0.0.{2 + i}")
            self.nodes[name] = Supervisor(
                tmp / name,
                name,
                token=NODE_TOKEN,
                settings={
                    "rest_host": host,
                    "public_host": host,
                    "coordinator": f"http://127.0.0.1:{coordinator_port}",
                },
            )
            self.nodes[name].launcher = (launchers or {}).get(i, [])
        node_rules = {
            name: {"url": sup.url, **(rules or {}).get(i, {})}
            for i, (name, sup) in enumerate(self.nodes.items())
        }
        self.coordinator = Coordinator(
            tmp / "coordinator", node_rules, port=coordinator_port, **coordinator
        )

    @property
    def names(self) -> list[str]:
        return list(self.nodes)

    def start(self) -> Cluster:
        for sup in self.nodes.values():
            sup.start()
        self.coordinator.start()
        wait_for(lambda: all(n["up"] for n in self.servers().values()), what="every node up")
        return self

    def call(self, method: str, path: str, expect: int = 200, **kwargs) -> dict:
        return self.coordinator.call(method, path, expect, **kwargs)

    def servers(self) -> dict:
        return self.call("GET", "/api/v1/cam/info")["info"]["nodes"]

    def running(self, kind: str = "camera") -> dict[str, list[str]]:
        """Per instance id, the nodes that run it, asked of each node directly."""
        found: dict[str, list[str]] = {}
        for name, sup in self.nodes.items():
            if sup.process is None or sup.process.poll() is not None:
                continue
            try:
                snapshot = requests.get(sup.url + "/api/v1/node", timeout=5).json()
            except requests.RequestException:
                continue
            for instance_id in snapshot["instances"][kind]:
                found.setdefault(instance_id, []).append(name)
        return found

    def stop(self) -> None:
        self.coordinator.stop()
        for sup in self.nodes.values():
            if sup.process is not None:
                sup.stop(signal.SIGTERM)
