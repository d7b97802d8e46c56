"""Where a new instance runs: the rules of CamServer's managers, on measured load.

Order: a pinned instance's node (`instances`, with its fixed port) -> a camera's pinned node
(`cameras`: the camera and its pipelines) -> for a pipeline, the node that runs its camera (so
it reads the ring) -> the least loaded expanding node. A pipeline asking for a `node_group`
goes only to nodes of that group, even away from its camera (it then reads its stream). Load
is, per resource, the larger of what the node measures (CPU, memory, network in and out,
against its `network_gbps`) and what its instances are estimated to take (those placed but
not polled yet included), plus what the new instance
will add: a camera of W x H x bytes at R Hz adds that to the node's input. A pin to a node that
is down gives way to the other rules, so that permanent instances fail over.

Pure functions of the view's numbers: tested on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .settings import NodeRule

BYTES_PER_CORE = 2e9  # frame bytes a core moves through a camera instance per second
SECONDS_PER_PIXEL = 0.4e-9  # the standard function's CPU per pixel, roughly


@dataclass(frozen=True)
class Load:
    cores: float = 0.0  # CPU in cores
    rx: float = 0.0  # network in, bytes/s
    tx: float = 0.0  # network out, bytes/s

    def __add__(self, other: Load) -> Load:
        return Load(self.cores + other.cores, self.rx + other.rx, self.tx + other.tx)


@dataclass(frozen=True)
class Candidate:
    rule: NodeRule
    load: dict  # the node's measured cpu (%), memory_percent, rx, tx (B/s), cores
    planned: Load  # what its instances are estimated to take, those not polled yet included

    def busy(self, extra: Load) -> tuple[float, float]:
        """How busy it would be with `extra` added: per resource the larger of what is
        measured and what its instances are estimated to take (a camera between two frames
        still counts), plus `extra`; the fraction of the busiest resource first, the sum of
        the fractions to tell apart nodes whose busiest is equal."""
        cores = max(1, int(self.load.get("cores") or 1))
        network = self.rule.network_gbps * 1.25e8
        fractions = (
            (max(self.load.get("cpu", 0.0) / 100 * cores, self.planned.cores) + extra.cores)
            / cores,
            self.load.get("memory_percent", 0.0) / 100,
            (max(self.load.get("rx", 0.0), self.planned.rx) + extra.rx) / network,
            (max(self.load.get("tx", 0.0), self.planned.tx) + extra.tx) / network,
        )
        return max(fractions), sum(fractions)


@dataclass(frozen=True)
class Placement:
    node: str
    port: int | None = None  # a pinned instance's fixed port
    why: str = ""
    remote_camera: bool = False  # a pipeline away from its camera: it reads its stream


def frame_rate_bytes(camera_config: dict | None) -> float:
    """Bytes per second a camera's frames take (0 when its size is unknown before it runs)."""
    config = camera_config or {}
    width, height = config.get("size_x"), config.get("size_y")
    if not isinstance(width, int) or not isinstance(height, int):
        return 0.0
    try:
        itemsize = np.dtype(config.get("dtype") or "uint16").itemsize
    except Exception:
        itemsize = 2
    rate = config.get("frame_rate")
    rate = rate if isinstance(rate, (int, float)) and rate > 0 else 10.0
    return float(width * height * itemsize * rate)


def estimate(kind: str, camera_config: dict | None) -> Load:
    """What a new camera or pipeline (of a camera so configured) adds to a node."""
    flow = frame_rate_bytes(camera_config)
    if kind == "camera":
        return Load(cores=flow / BYTES_PER_CORE, rx=flow)
    pixels = flow / 2  # per second, roughly: 2-byte pixels
    return Load(cores=pixels * SECONDS_PER_PIXEL)


def place(
    kind: str,
    name: str,
    camera: str | None,
    camera_node: str | None,
    group: str | None,
    candidates: list[Candidate],
    extra: Load,
) -> Placement:
    """Where `name` (a camera, or a pipeline of `camera`, running on `camera_node` if it
    runs) goes, among the usable nodes `candidates`; ValueError if none can take it."""
    by_name = {c.rule.name: c for c in candidates}
    for c in candidates:
        if name in c.rule.pinned():
            return Placement(c.rule.name, c.rule.pinned()[name], f"{name} is pinned there")
    if camera is not None:
        for c in candidates:
            if camera in c.rule.cameras and (group is None or group in c.rule.groups):
                return Placement(
                    c.rule.name,
                    why=f"camera {camera} is pinned there",
                    remote_camera=kind == "pipeline" and camera_node not in (None, c.rule.name),
                )
    if kind == "pipeline" and camera_node is not None:
        home = by_name.get(camera_node)
        if home is not None and (group is None or group in home.rule.groups):
            if home.rule.expanding:
                return Placement(camera_node, why=f"it reads camera {camera}'s ring there")
    pool = [c for c in candidates if c.rule.expanding and (group is None or group in c.rule.groups)]
    if not pool:
        wanted = f" of group {group!r}" if group else ""
        raise ValueError(f"no node{wanted} can take {kind} {name}: none is up and expanding")
    chosen = min(pool, key=lambda c: (c.busy(extra), c.rule.name))
    remote = kind == "pipeline" and camera_node is not None and camera_node != chosen.rule.name
    why = "the least loaded node"
    if remote:
        why += f"; it reads camera {camera}'s stream from {camera_node} (not a node it may run on)"
    return Placement(chosen.rule.name, why=why, remote_camera=remote)
