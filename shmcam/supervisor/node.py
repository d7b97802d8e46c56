"""What the REST API asks of a node, in one place: the seam between routes and the node.

The routes (api/) call only these methods, so the cluster coordinator serves the same routes by
implementing them over many nodes. Each method validates what it is given and changes nothing
when it refuses (BadRequest, NotFound, Conflict, Unavailable: errors.py).
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import psutil

import shmcam
from shmcam.sources import probe

from . import arrays, catalog, metrics, validation
from .errors import BadRequest, NotFound
from .frames import MAX_BACKGROUND_IMAGES, Frames
from .logs import LogRing, camserver_entry
from .manager import Manager
from .permanent import Permanent
from .settings import Settings

log = logging.getLogger(__name__)


class Node:
    def __init__(self, manager: Manager, frames: Frames, log_ring: LogRing, permanent: Permanent):
        self.manager = manager
        self.permanent = permanent
        self.store = manager.store
        self.frames = frames
        self.log_ring = log_ring
        self.name = manager.settings.node
        self._net = (time.monotonic(), psutil.net_io_counters(pernic=True), None)
        self._load_lock = threading.Lock()

    @property
    def settings(self) -> Settings:
        return self.manager.settings

    # --- both roots -------------------------------------------------------------------------
    def server_info(self, kind: str) -> dict:
        return {
            "version": shmcam.__version__,
            "active_instances": {
                i: inst.info() for i, inst in self.manager.instances(kind).items()
            },
            **self.host_load(),
        }

    def host_load(self) -> dict:
        """CamServer's host figures: cpu (percent), memory (bytes in use), tx and rx (bytes
        per second, over at least the last second); and memory_percent."""
        with self._load_lock:
            now = time.monotonic()
            then, before, figures = self._net
            if figures is None or now - then >= 1.0:
                net, memory = psutil.net_io_counters(pernic=True), psutil.virtual_memory()
                elapsed = max(now - then, 1e-3)
                figures = {
                    "cpu": psutil.cpu_percent(),
                    "memory": memory.total - memory.available,
                    "memory_percent": memory.percent,
                    "tx": _traffic(before, net, "bytes_sent") / elapsed,
                    "rx": _traffic(before, net, "bytes_recv") / elapsed,
                }
                self._net = (now, net, figures)
            return dict(figures)

    def snapshot(self) -> dict:
        """Everything a coordinator polls, in one answer: the node, its load and every live
        instance's info, by kind."""
        return {
            "node": self.name,
            "version": shmcam.__version__,
            "public_host": self.settings.public_host,
            "load": {**self.host_load(), "cores": psutil.cpu_count()},
            "instances": {
                kind: self.server_info(kind)["active_instances"] for kind in ("camera", "pipeline")
            },
            "permanent": self.permanent.settable(),  # the REST-managed part
        }

    def file_hashes(self) -> dict:
        return self.store.hashes()

    def permanent_instances(self) -> dict[str, str]:
        return self.permanent.settable()

    def set_permanent_instances(self, table) -> dict[str, str]:
        return self.permanent.set(table)

    def heartbeat(self, kind: str) -> dict:
        return {i: heartbeat_entry(inst.info()) for i, inst in self.manager.instances(kind).items()}

    def stop_all(self, kind: str) -> None:
        self.manager.stop_all(kind)

    def stop(self, kind: str, instance_id: str, forget: bool = False) -> None:
        self.manager.stop(kind, instance_id, forget)

    def metrics(self) -> str:
        tables = {kind: self.manager.instances(kind) for kind in ("camera", "pipeline")}
        return metrics.render(self.name, tables)

    # --- cameras ----------------------------------------------------------------------------
    def camera_names(self) -> list[str]:
        return self.store.config_names("camera")

    def camera_aliases(self) -> dict[str, str]:
        return catalog.aliases(self.store)

    def groups(self, kind: str) -> dict[str, list[str]]:
        return catalog.groups(self.store, kind)

    def camera_stream(self, name: str) -> str:
        """The camera's stream; CamServer's ipc endpoint for a camera with protocol: ipc."""
        instance = self.manager.camera(name)
        return instance.stream_ipc or instance.stream

    def camera_online(self, name: str) -> tuple[bool, str]:
        """A running camera says; one that is not running is probed (a short-lived process,
        one of the slow calls' slots)."""
        config = self.manager.camera_config(name)
        instance = self.manager.instances("camera").get(name)
        if instance is None:
            with self.frames.slot():
                return probe.is_online(config, name, self.manager.camera_scripts_dir)
        if instance.online is None:
            return False, "connecting to the source"
        online, reason = instance.online
        arriving = online and instance.counters().get("frames_in", 0) > 0
        return online, "frames arriving" if arriving else reason

    def camera_config(self, name: str) -> dict:
        """Expanded with its source type's defaults, as CamServer answers it."""
        return validation.expanded_camera(self.manager.camera_config(name))

    def set_camera_config(self, name: str, config) -> dict:
        return self.manager.set_camera_config(name, config)

    def delete_camera_config(self, name: str) -> None:
        self.store.delete_config("camera", name)

    def camera_image(self, name: str) -> np.ndarray:
        return self.frames.camera_image(name)

    # --- pipelines --------------------------------------------------------------------------
    def pipeline_names(self) -> list[str]:
        return self.store.config_names("pipeline")

    def create_pipeline(self, config, instance_id: str | None):
        return self.manager.create_pipeline(config, instance_id)

    def create_pipeline_from_name(self, name: str, instance_id: str | None, extra: str | None):
        config = catalog.with_additional(self.store.get_config("pipeline", name), extra)
        return self.manager.create_pipeline(config, instance_id)

    def shared_pipeline(self, instance_id: str):
        return self.manager.shared_pipeline(instance_id)

    def pipeline_for_config(self, config):
        return self.manager.pipeline_for_config(config)

    def pipeline_info(self, instance_id: str) -> dict:
        """A running instance's info (or a permanent one's, coming back); one that ended is
        forgotten, as CamServer forgets it (its exit code, end and logs stay at /exitcode and
        /api/v1/logs/instance)."""
        instance = self.manager.running_pipeline(instance_id)
        if not (instance.alive or instance.permanent or instance.restart_at is not None):
            raise NotFound(
                f"Instance '{instance_id}' does not exist. (It ended: see its exitcode.)"
            )
        return instance.info()

    def pipeline_exitcode(self, instance_id: str) -> dict:
        """CamServer's `exitcode` (None while running, as a process's), and shmcam's own
        account of the end: its state, why it finished, its last error."""
        instance = self.manager.running_pipeline(instance_id)
        return {
            "exitcode": instance.poll(),
            "instance_state": instance.state,
            "output_file": instance.output_file,
            "finished": instance.finished,
            "last_error": instance.last_error,
        }

    def pipeline_image(self, instance_id: str) -> np.ndarray:
        return self.frames.pipeline_image(instance_id)

    def instance_config(self, instance_id: str) -> dict:
        return self.manager.running_pipeline(instance_id).config

    def update_pipeline(self, instance_id: str, update) -> dict:
        """A live update; a permanent pipeline's saved config follows it (CamServer's §8.2),
        so that the instance comes back with it after a restart of the node."""
        config = self.manager.update_pipeline(instance_id, update)
        saved = self.permanent.config_name(instance_id)
        if saved is not None:
            self.store.save_config("pipeline", saved, config)
        return config

    def pipeline_config(self, name: str) -> dict:
        """Expanded with CamServer's defaults, as CamServer answers it."""
        return validation.expanded_pipeline(self.store.get_config("pipeline", name))

    def save_pipeline_config(self, name: str, config) -> dict:
        validation.pipeline(config, self.store.config_names("camera"))
        self.manager.places_allowed(config)  # a config this node could never run
        self.store.save_config("pipeline", name, config)
        return config

    def delete_pipeline_config(self, name: str) -> None:
        self.store.delete_config("pipeline", name)

    # --- backgrounds ------------------------------------------------------------------------
    def collect_background(self, camera: str, n_images: int) -> str:
        if not 1 <= n_images <= MAX_BACKGROUND_IMAGES:
            raise BadRequest(f"n_images must be between 1 and {MAX_BACKGROUND_IMAGES}")
        self.manager.camera_config(camera)  # a camera of that name, before any waiting
        mean = self.frames.background(camera, n_images)
        background_id = self.store.new_background_id(camera)
        self.store.save_background(background_id, mean)
        return background_id

    def latest_background(self, camera: str) -> str:
        return self.store.latest_background(camera)

    def background_ids(self, camera: str) -> list[str]:
        return self.store.background_ids(camera)

    def background(self, background_id: str) -> np.ndarray:
        return self.store.get_background(background_id)

    def save_background(self, background_id: str, array: np.ndarray) -> None:
        self.store.save_background(background_id, arrays.check_background(array))

    # --- scripts and libs -------------------------------------------------------------------
    def file_names(self, kind: str) -> list[str]:
        return self.store.file_names(kind)

    def get_file(self, kind: str, name: str) -> bytes:
        return self.store.get_file(kind, name)

    def save_file(self, kind: str, name: str, data: bytes) -> None:
        validation.upload(kind, name, data, self.store.data_dir)
        self.store.save_file(kind, name, data)

    def delete_file(self, kind: str, name: str) -> None:
        self.store.delete_file(kind, name)

    # --- logs -------------------------------------------------------------------------------
    def logs(self) -> list[list]:
        return [camserver_entry(record) for record in self.log_ring.records]

    def instance_logs(self, instance_id: str) -> list[list]:
        for kind in ("pipeline", "camera"):
            instance = self.manager.table(kind).get(instance_id)
            if instance is not None:
                return [camserver_entry(record) for record in list(instance.logs)]
        raise NotFound(f"no instance {instance_id!r} on this node")


def heartbeat_entry(info: dict) -> dict:
    """CamServer's heartbeat entry of an instance, from its info."""
    statistics = info["statistics"]
    entry = {
        "stream_address": info["stream_address"],
        "camera_name": info["camera_name"],
        "simulation": (info.get("config") or {}).get("source_type") == "simulation",
        "last_start_time": info["last_start_time"],
        "read_only": info["read_only"],
        "geometry": info.get("camera_geometry"),
        **{
            k: statistics.get(k)
            for k in (
                "total_bytes",
                "clients",
                "throughput",
                "time",
                "pid",
                "cpu",
                "memory",
                "header_changes",
                "frame_shape",
            )
        },
        "rx": statistics.get("fps_in"),
        "tx": statistics.get("fps_out"),
    }
    if statistics.get("forwards"):
        entry["forwards"] = statistics["forwards"]
    return entry


def _traffic(before: dict, now: dict, field: str) -> int:
    """Bytes through the interfaces present both times: one that went away meanwhile (a
    network namespace's veth) must not make the host's traffic negative."""
    return sum(
        max(0, getattr(counters, field) - getattr(before[nic], field))
        for nic, counters in now.items()
        if nic in before
    )
