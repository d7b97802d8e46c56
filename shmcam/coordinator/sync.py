"""Before an instance starts on a node, the node gets what it needs from the cluster's store:
the configs (as the coordinator means them for that node), the camera script, the user
function's files, the libs, an external pipeline's uploaded program and the backgrounds. Only
what the node lacks or has in another version is pushed, by content hash (the node's
`/api/v1/node/files`), so a node that has run an instance before receives nothing the next
time.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from shmcam.processing.functions import BUILTIN, is_path, script_names
from shmcam.supervisor.errors import NotFound
from shmcam.supervisor.store import ConfigStore

from .client import NodeClient

log = logging.getLogger(__name__)

HASHES_FRESH = 30.0  # s a node's hashes are trusted without asking again


@dataclass
class Needs:
    """What an instance needs on its node: configs by (kind, name) -> config, and files."""

    configs: dict[tuple[str, str], dict] = field(default_factory=dict)
    files: set[tuple[str, str]] = field(default_factory=set)  # (store kind, name)
    backgrounds: set[str] = field(default_factory=set)


def config_hash(config: dict) -> str:
    """The hash a node's store gives a config (supervisor/store.py `hashes`)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, allow_nan=False).encode()).hexdigest()


class Sync:
    def __init__(self, store: ConfigStore):
        self.store = store
        self._hashes: dict[str, tuple[float, dict]] = {}
        self._lock = threading.Lock()

    # --- what an instance needs ---------------------------------------------------------------
    def camera_needs(self, name: str, config: dict, needs: Needs | None = None) -> Needs:
        needs = needs or Needs()
        needs.configs[("camera", name)] = config
        if config.get("source_type") == "script":
            script = config.get("class") or config.get("source")
            for file in script_names(script, self.store.file_names("camera_script")):
                needs.files.add(("camera_script", file))
        background = config.get("image_background")
        if background is True:
            try:
                needs.backgrounds.add(self.store.latest_background(name))
            except NotFound:
                pass
        elif isinstance(background, str):
            needs.backgrounds.add(background)
        return needs

    def pipeline_needs(self, name: str | None, config: dict, needs: Needs | None = None) -> Needs:
        """Needs of a pipeline (saved as `name` on the node if given), and of its camera."""
        needs = needs or Needs()
        if name is not None:
            needs.configs[("pipeline", name)] = config
        camera = config.get("camera_name")
        if isinstance(camera, str):
            try:
                self.camera_needs(camera, self.store.get_config("camera", camera), needs)
            except NotFound:
                pass  # the node refuses the pipeline with its own clear message
        function = config.get("function")
        if isinstance(function, str) and function not in BUILTIN and not is_path(function):
            for file in script_names(function, self.store.file_names("script")):
                needs.files.add(("script", file))
        for lib in config.get("libs") or ():
            if isinstance(lib, str):
                needs.files.add(("lib", lib))
        if config.get("executable") in self.store.file_names("program"):
            needs.files.add(("program", config["executable"]))
        background = config.get("image_background")
        if config.get("image_background_enable") and isinstance(background, str):
            needs.backgrounds.add(background)
        return needs

    # --- pushing ----------------------------------------------------------------------------------
    def push(self, client: NodeClient, needs: Needs) -> int:
        """Give the node what it lacks of `needs`; how many items were sent."""
        have = self._node_hashes(client)
        sent = 0
        cameras_first = sorted(needs.configs.items(), key=lambda item: item[0][0] != "camera")
        for (kind, name), config in cameras_first:  # a pipeline config names its camera
            if have.get(kind, {}).get(name) != config_hash(config):
                root = "cam" if kind == "camera" else "pipeline"
                client.call("POST", f"/api/v1/{root}/{name}/config", json=config)
                sent += 1
        for kind, name in sorted(needs.files):
            data = self.store.get_file(kind, name)
            if have.get(kind, {}).get(name) != hashlib.sha256(data).hexdigest():
                client.call("PUT", _file_route(kind, name), data=data)
                sent += 1
        for background in sorted(needs.backgrounds):
            try:
                array = self.store.get_background(background)
            except NotFound:
                continue
            # the node stores the .npy as np.save wrote it here: the files hash the same
            if have.get("background", {}).get(background) != self.store.file_hash(
                "background", background
            ):
                buffer = io.BytesIO()
                np.save(buffer, array, allow_pickle=False)
                client.call(
                    "PUT",
                    f"/api/v1/pipeline/background/{background}/image_bytes",
                    data=buffer.getvalue(),
                )
                sent += 1
        if sent:
            log.info("node %s: %d configs and files pushed", client.name, sent)
            with self._lock:
                self._hashes.pop(client.name, None)
        return sent

    def _node_hashes(self, client: NodeClient) -> dict:
        with self._lock:
            cached = self._hashes.get(client.name)
        if cached is not None and time.monotonic() - cached[0] < HASHES_FRESH:
            return cached[1]
        hashes = client.get("/api/v1/node/files")["files"]
        with self._lock:
            self._hashes[client.name] = (time.monotonic(), hashes)
        return hashes


def _file_route(kind: str, name: str) -> str:
    if kind == "camera_script":
        return f"/api/v1/cam/script/{name}/script_bytes"
    if kind in ("lib", "program"):
        return f"/api/v1/pipeline/{kind}/{name}/{kind}_bytes"
    return f"/api/v1/pipeline/script/{name}/script_bytes"
