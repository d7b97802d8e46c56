"""A network namespace a test runs a node in, linked to the host by a veth pair on a bridge
of its own, so that the test can cut the link (a partition) and heal it. Root only (CI runs
as root: docs/pitfalls.md); everything is removed at the end, even when the test fails."""

from __future__ import annotations

import os
import subprocess


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Namespace:
    def __init__(self, tag: str, subnet: int):
        """`subnet`: the third byte of 10.77.<subnet>.0/24, distinct per test."""
        self.name = f"shmns{tag}"
        self.bridge, self.host_end, self.ns_end = f"shmbr{tag}", f"shmh{tag}", f"shmn{tag}"
        self.host_address = f"10.77.{subnet}.1"
        self.address = f"10.77.{subnet}.2"
        self.launcher = ["ip", "netns", "exec", self.name]

    def __enter__(self) -> Namespace:
        if os.geteuid() != 0:
            raise RuntimeError("network namespaces need root (CI runs as root)")
        try:
            ip("netns", "add", self.name)
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{self.host_address}/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            ip("link", "add", self.host_end, "type", "veth", "peer", "name", self.ns_end)
            ip("link", "set", self.host_end, "master", self.bridge)
            ip("link", "set", self.host_end, "up")
            ip("link", "set", self.ns_end, "netns", self.name)
            self.run("ip", "addr", "add", f"{self.address}/24", "dev", self.ns_end)
            self.run("ip", "link", "set", self.ns_end, "up")
            self.run("ip", "link", "set", "lo", "up")
            self.run("ip", "route", "add", "default", "via", self.host_address)
        except Exception:
            self.__exit__()
            raise
        return self

    def run(self, *command: str) -> None:
        subprocess.run([*self.launcher, *command], check=True, capture_output=True, timeout=30)

    def cut(self) -> None:
        """The partition: the node keeps running, nothing reaches it."""
        ip("link", "set", self.host_end, "down")

    def heal(self) -> None:
        ip("link", "set", self.host_end, "up")

    def __exit__(self, *exc) -> None:
        for args in (
            ("link", "del", self.host_end),
            ("link", "del", self.bridge),
            ("netns", "del", self.name),
        ):
            subprocess.run(["ip", *args], capture_output=True, timeout=30)
