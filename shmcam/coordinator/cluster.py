"""The cluster as the REST routes see it: the node facade's methods (supervisor/node.py) over
many nodes, so the coordinator serves the same `/api/v1/cam`, `/api/v1/pipeline` and
`/api/v1/logs` routes as a node.

Lists come from the cluster's store and the view's polls; a call about one instance goes to
the node that runs it; a call that starts one places it first (placement.py), gives the node
what it needs (sync.py) and claims it there, all under a lock per instance name: concurrent
requests for one camera or shared pipeline yield one instance in the whole cluster.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import psutil

import shmcam
from shmcam.supervisor import arrays, catalog, validation
from shmcam.supervisor.errors import BadRequest, Conflict, NotFound, Unavailable
from shmcam.supervisor.frames import MAX_BACKGROUND_IMAGES
from shmcam.supervisor.logs import LogRing, camserver_entry
from shmcam.supervisor.manager import camera_read
from shmcam.supervisor.node import heartbeat_entry
from shmcam.supervisor.store import ConfigStore
from shmcam.workers.pipeline_types import output_mode, pipeline_type

from . import metrics, placement
from .client import NodeError
from .sync import Sync
from .view import ClusterView, NodeState

log = logging.getLogger(__name__)

PENDING_SECONDS = 30.0  # how long a placement counts if the polls never show it


@dataclass(frozen=True)
class Started:
    """What the pipeline routes answer about an instance: its id, stream and config."""

    id: str
    stream: str
    config: dict
    node: str
    note: str = ""


class Cluster:
    name = "cluster"

    def __init__(self, store: ConfigStore, view: ClusterView, log_ring: LogRing):
        self.store = store
        self.view = view
        self.sync = Sync(store)
        self.log_ring = log_ring
        self.permanent: dict[str, str] = {}  # instance -> config (the keeper keeps it)
        self._locks: dict[tuple[str, str], threading.RLock] = collections.defaultdict(
            threading.RLock  # re-entered: a pipeline's start may ask for its camera's stream
        )
        self._locks_lock = threading.Lock()
        # placed, not seen in a poll yet: node -> {(kind, instance): (until, estimated load)}
        self._pending: dict[str, dict[tuple[str, str], tuple[float, placement.Load]]] = (
            collections.defaultdict(dict)
        )
        self._last_node: dict[tuple[str, str], str] = {}  # where an instance ran last
        self._pool = ThreadPoolExecutor(16, thread_name_prefix="fan-out")
        self._net = (time.monotonic(), psutil.net_io_counters(), None)

    # --- locks, placement, starting ---------------------------------------------------------------
    @contextmanager
    def locked(self, kind: str, instance_id: str):
        with self._locks_lock:
            lock = self._locks[(kind, instance_id)]
        with lock:
            yield

    def candidates(self) -> list[placement.Candidate]:
        """The usable nodes, each with what its instances (polled or just placed) take."""
        now = time.monotonic()
        found = []
        for state in self.view.usable():
            pending = self._pending[state.name]
            for key, (until, _) in list(pending.items()):
                if until < now or key[1] in state.instances(key[0]):
                    del pending[key]  # the polls show it now, or it never came
            planned = sum((load for _, load in pending.values()), placement.Load())
            for kind in ("camera", "pipeline"):
                for info in state.instances(kind).values():
                    planned = planned + placement.estimate(kind, self._camera_of(kind, info))
            found.append(placement.Candidate(state.rule, state.load, planned))
        return found

    def _camera_of(self, kind: str, info: dict) -> dict | None:
        """The config of the camera whose frames an instance takes (for its estimate)."""
        if kind == "camera":
            return info.get("config")
        camera = info.get("camera_name")
        try:
            return self.store.get_config("camera", camera) if camera else None
        except (NotFound, BadRequest):
            return None

    def place(
        self, kind: str, name: str, camera: str | None, camera_node: str | None, group: str | None
    ) -> placement.Placement:
        camera_config = None
        if camera is not None:
            try:
                camera_config = self.store.get_config("camera", camera)
            except NotFound:
                pass
        extra = placement.estimate(kind, camera_config)
        try:
            chosen = placement.place(
                kind, name, camera, camera_node, group, self.candidates(), extra
            )
        except ValueError as error:
            raise Unavailable(str(error)) from None
        self._pending[chosen.node][(kind, name)] = (time.monotonic() + PENDING_SECONDS, extra)
        log.info("%s %s goes to node %s: %s", kind, name, chosen.node, chosen.why)
        return chosen

    def state(self, node: str) -> NodeState:
        state = self.view.node(node)
        if state is None or not state.usable:
            raise Unavailable(f"node {node} is not available")
        return state

    def _on_node(self, kind: str, instance_id: str, state: NodeState, call):
        """Run `call(state)` that starts the instance there, claimed meanwhile."""
        self.view.claim(kind, instance_id, state.name)
        try:
            answer = call(state)
        except Exception:
            self.view.release(kind, instance_id, state.name)
            raise
        self._last_node[(kind, instance_id)] = state.name
        return answer

    # --- cameras --------------------------------------------------------------------------------
    def camera_node(
        self, name: str, start: bool = True, target: str | None = None
    ) -> NodeState | None:
        """The node running a camera; with start, started if it runs nowhere: on `target`
        if given, else where placement puts it."""
        with self.locked("camera", name):
            found = self.view.where("camera", name)
            if found or not start:
                return found[0] if found else None
            config = self.stored_camera(name)
            chosen = self.state(target or self.place("camera", name, name, None, None).node)
            self.sync.push(chosen.client, self.sync.camera_needs(name, config))
            self._on_node("camera", name, chosen, lambda s: s.client.get(f"/api/v1/cam/{name}"))
            return chosen

    def camera_names(self) -> list[str]:
        return self.store.config_names("camera")

    def camera_aliases(self) -> dict[str, str]:
        return catalog.aliases(self.store)

    def groups(self, kind: str) -> dict[str, list[str]]:
        return catalog.groups(self.store, kind)

    def camera_stream(self, name: str) -> str:
        return self.camera_node(name).client.get(f"/api/v1/cam/{name}")["stream"]

    def camera_online(self, name: str) -> tuple[bool, str]:
        config = self.stored_camera(name)
        state = self.camera_node(name, start=False)
        if state is None:  # ask the node it would go to, which knows its sources' reach
            state = self.state(self.place("camera", name, name, None, None).node)
            self.sync.push(state.client, self.sync.camera_needs(name, config))
        answer = state.client.get(f"/api/v1/cam/{name}/is_online")
        return answer["online"], f"node {state.name}: {answer['status']}"

    def stored_camera(self, name: str) -> dict:
        """The camera config as the cluster's store has it (what nodes get), validated."""
        return validation.camera(self.store.get_config("camera", name))

    def camera_config(self, name: str) -> dict:
        """Expanded with its source type's defaults, as CamServer answers it."""
        return validation.expanded_camera(self.stored_camera(name))

    def set_camera_config(self, name: str, config) -> dict:
        """Validated, then applied on the node running the camera (which restarts it, or
        keeps the old config if the new one does not run), then saved: all or nothing."""
        validation.camera_name(name)
        validation.camera(config)
        self.store.check_config(config, f"camera config {name!r}")
        state = self.camera_node(name, start=False)
        if state is not None:
            state.client.call("POST", f"/api/v1/cam/{name}/config", json=config)
        self.store.save_config("camera", name, config)
        return config

    def delete_camera_config(self, name: str) -> None:
        self.store.delete_config("camera", name)

    def camera_image(self, name: str) -> np.ndarray:
        state = self.camera_node(name)
        return _image(state.client.get(f"/api/v1/cam/{name}/image_bytes"))

    # --- pipelines ------------------------------------------------------------------------------
    def pipeline_names(self) -> list[str]:
        return self.store.config_names("pipeline")

    def _home(self, instance_id: str, config: dict) -> tuple[NodeState, dict, str]:
        """Where a pipeline goes, the config it gets there (with a pinned port, or the stream
        of a camera, upstream or fanin on another node) and why (a warning when not local).
        A pipeline goes to its input's node unless that node is full or its node_group is
        elsewhere; a fanout's workers go where there is room (it deals its frames out over
        ZMQ wherever they are)."""
        validation.pipeline(config, self.store.config_names("camera"))
        camera = camera_read(config)
        upstream = config.get("input_pipeline")
        source_node, prefer, camera_runs = None, None, False
        if upstream:
            source = self.shared_pipeline(upstream)
            source_node = source.node
            prefer = None if pipeline_type(source.config) == "fanout" else source_node
        elif camera is not None:
            found = self.view.where("camera", camera)
            camera_runs = bool(found)
            # where it runs, or where it would go: the pipeline follows it unless it asks
            # for a group elsewhere
            source_node = prefer = (
                found[0].name if found else self.place("camera", camera, camera, None, None).node
            )
        group = config.get("node_group")
        chosen = self.place("pipeline", instance_id, camera or upstream, prefer, group)
        effective = dict(config)
        effective.pop("node_group", None)
        if chosen.port is not None:
            effective["port"] = chosen.port
        self._fanin_stream(effective, chosen.node)
        note = ""
        if source_node is not None and source_node != chosen.node:
            if upstream:
                info = self.view.info("pipeline", upstream)
                if info is None:
                    raise Unavailable(f"upstream pipeline {upstream} is not visible yet; retry")
                effective.pop("input_pipeline")
                effective["input_stream"] = info[1]["stream_address"]
                if output_mode(info[1]["config"]) == "PUSH":
                    effective["input_mode"] = "PULL"
            else:
                home = self.camera_node(camera, target=source_node)
                effective["input_stream"] = home.client.get(f"/api/v1/cam/{camera}")["stream"]
            note = (
                f"it runs on {chosen.node}, not on {source_node} where its input is: {chosen.why}"
            )
            log.warning("pipeline %s: %s", instance_id, note)
        elif camera is not None and not camera_runs:
            self.view.claim("camera", camera, chosen.node)  # the node starts it there
        return self.state(chosen.node), effective, note

    def _fanin_stream(self, effective: dict, node: str) -> None:
        """A worker's output_pipeline, the fanin it pushes its results to (started if it
        runs nowhere): on another node, the address the fanin binds there (output_stream)."""
        fanin = effective.get("output_pipeline")
        if not fanin:
            return
        target = self.shared_pipeline(fanin)
        if target.node == node:
            return  # the node resolves it
        host = target.stream.partition("://")[2].rpartition(":")[0]
        port = str(target.config.get("input_stream", "")).rpartition(":")[2]
        effective.pop("output_pipeline")
        effective["output_stream"] = f"tcp://{host}:{port}"

    def create_pipeline(self, config, instance_id: str | None) -> Started:
        instance_id = instance_id or str(uuid.uuid4())
        if not isinstance(config, dict):
            raise BadRequest("a pipeline config must be a JSON object")
        camera = camera_read(config)
        with self.locked("pipeline", instance_id), self._camera_lock(camera):
            if self.view.where("pipeline", instance_id):
                raise Conflict(
                    f"instance {instance_id} is already running; stop it first or choose "
                    f"another instance_id"
                )
            state, effective, note = self._home(instance_id, config)
            self.sync.push(state.client, self.sync.pipeline_needs(None, effective))
            answer = self._on_node(
                "pipeline",
                instance_id,
                state,
                lambda s: s.client.call(
                    "POST", "/api/v1/pipeline", params={"instance_id": instance_id}, json=effective
                ),
            )
        return Started(instance_id, answer["stream"], answer["config"], state.name, note)

    @contextmanager
    def _camera_lock(self, camera: str | None):
        if camera is None:
            yield
        else:
            with self.locked("camera", camera):
                yield

    def create_pipeline_from_name(self, name: str, instance_id: str | None, extra: str | None):
        config = catalog.with_additional(self.store.get_config("pipeline", name), extra)
        return self.create_pipeline(config, instance_id)

    def shared_pipeline(self, name: str) -> Started:
        """The instance named after a saved config, started from it if it runs nowhere."""
        config = self.store.get_config("pipeline", name) if not self._running(name) else None
        camera = camera_read(config) if config else None
        with self.locked("pipeline", name), self._camera_lock(camera):
            found = self.view.info("pipeline", name)
            if found is not None:
                state, info = found
                return Started(name, info["stream_address"], info["config"], state.name)
            config = config or self.store.get_config("pipeline", name)
            state, effective, note = self._home(name, config)
            self.sync.push(state.client, self.sync.pipeline_needs(name, effective))
            answer = self._on_node(
                "pipeline",
                name,
                state,
                lambda s: s.client.get(f"/api/v1/pipeline/instance/{name}"),
            )
        return Started(name, answer["stream"], answer["config"], state.name, note)

    def _running(self, instance_id: str) -> bool:
        return bool(self.view.where("pipeline", instance_id))

    def pipeline_for_config(self, config) -> Started:
        """A running shared instance with an equal config anywhere, else a new one."""
        wanted = validation.expanded_pipeline(config) if isinstance(config, dict) else config
        for instance_id, (state, info) in self.view.instances("pipeline").items():
            if info.get("shared") and info.get("config") == wanted:
                return Started(instance_id, info["stream_address"], info["config"], state.name)
        if not isinstance(config, dict):
            raise BadRequest("a pipeline config must be a JSON object")
        camera = camera_read(config)
        with self._camera_lock(camera):
            state, effective, note = self._home(f"shared-{uuid.uuid4()}", config)
            self.sync.push(state.client, self.sync.pipeline_needs(None, effective))
            answer = state.client.call("POST", "/api/v1/pipeline/instance/", json=effective)
        self.view.claim("pipeline", answer["instance_id"], state.name)
        self._last_node[("pipeline", answer["instance_id"])] = state.name
        return Started(answer["instance_id"], answer["stream"], answer["config"], state.name, note)

    def node_of(self, kind: str, instance_id: str) -> NodeState:
        """The node running an instance, or where it ran last (its exit code and logs are
        there); else the node that answers for it."""
        found = self.view.where(kind, instance_id)
        if found:
            return found[0]
        last = self._last_node.get((kind, instance_id))
        state = self.view.node(last) if last else None
        if state is not None and state.usable:
            return state
        root = "cam" if kind == "camera" else "pipeline/instance"
        path = f"/api/v1/{root}/{instance_id}/config" if kind == "pipeline" else None
        for state in self.view.usable():
            if path is not None and state.client.request("GET", path, timeout=5).status_code == 200:
                self._last_node[(kind, instance_id)] = state.name
                return state
        raise NotFound(f"no {kind} instance {instance_id!r} in the cluster")

    def pipeline_info(self, instance_id: str) -> dict:
        """From the last poll while it runs (its statistics are as fresh as the node's, which
        computes them twice a second), else asked of the node it ran on."""
        found = self.view.info("pipeline", instance_id)
        if found is not None:
            state, info = found
        else:
            state = self.node_of("pipeline", instance_id)
            info = state.client.get(f"/api/v1/pipeline/instance/{instance_id}/info")["info"]
        return {**info, "node": state.name}

    def pipeline_exitcode(self, instance_id: str) -> dict:
        answer = self.node_of("pipeline", instance_id).client.get(
            f"/api/v1/pipeline/instance/{instance_id}/exitcode"
        )
        return {k: v for k, v in answer.items() if k not in ("state", "status")}

    def pipeline_image(self, instance_id: str) -> np.ndarray:
        state = self.node_of("pipeline", instance_id)
        return _image(state.client.get(f"/api/v1/pipeline/instance/{instance_id}/image_bytes"))

    def instance_config(self, instance_id: str) -> dict:
        found = self.view.info("pipeline", instance_id)
        if found is not None:
            return found[1]["config"]
        state = self.node_of("pipeline", instance_id)
        return state.client.get(f"/api/v1/pipeline/instance/{instance_id}/config")["config"]

    def update_pipeline(self, instance_id: str, update) -> dict:
        """Live update on its node; a permanent pipeline's saved config (in the cluster's
        store too) follows, as CamServer's manager does (§8.2)."""
        state = self.node_of("pipeline", instance_id)
        config = state.client.call(
            "POST", f"/api/v1/pipeline/instance/{instance_id}/config", json=update
        )["config"]
        self.view.updated(state, "pipeline", instance_id, config)
        saved = self.permanent.get(instance_id)
        if saved is not None and not saved.startswith("camera:"):
            merged = validation.merge(self.store.get_config("pipeline", saved), update)
            self.store.save_config("pipeline", saved, merged)
        return config

    def pipeline_config(self, name: str) -> dict:
        return validation.expanded_pipeline(self.store.get_config("pipeline", name))

    def save_pipeline_config(self, name: str, config) -> dict:
        validation.pipeline(config, self.store.config_names("camera"))
        self.store.save_config("pipeline", name, config)
        return config

    def delete_pipeline_config(self, name: str) -> None:
        self.store.delete_config("pipeline", name)

    # --- both kinds -----------------------------------------------------------------------------
    def server_info(self, kind: str) -> dict:
        instances = {
            instance_id: {**info, "node": state.name, "host": state.rule.url}
            for instance_id, (state, info) in self.view.instances(kind).items()
        }
        return {
            "version": shmcam.__version__,
            "active_instances": instances,
            **self.host_load(),
            "nodes": self.nodes_summary(),
        }

    def nodes_summary(self) -> dict:
        with self.view.lock:
            states = list(self.view.nodes.values())
        return {
            s.name: {
                "url": s.rule.url,
                "up": s.up,
                "enabled": s.rule.enabled,
                "error": s.error or None,
                **s.load,
            }
            for s in states
        }

    def host_load(self) -> dict:
        """The coordinator host's own cpu, memory and network (CamServer's info keys)."""
        now, net, memory = time.monotonic(), psutil.net_io_counters(), psutil.virtual_memory()
        then, before, figures = self._net
        if figures is None or now - then >= 1.0:
            elapsed = max(now - then, 1e-3)
            figures = {
                "cpu": psutil.cpu_percent(),
                "memory": memory.total - memory.available,
                "memory_percent": memory.percent,
                "tx": (net.bytes_sent - before.bytes_sent) / elapsed,
                "rx": (net.bytes_recv - before.bytes_recv) / elapsed,
            }
            self._net = (now, net, figures)
        return dict(figures)

    def heartbeat(self, kind: str) -> dict:
        return {i: heartbeat_entry(info) for i, (_, info) in self.view.instances(kind).items()}

    def stop(self, kind: str, instance_id: str, forget: bool = False) -> None:
        root = "cam" if kind == "camera" else "pipeline"
        suffix = "/del" if forget else ""
        stopped = 0
        for state in self.view.where(kind, instance_id):
            try:
                state.client.call("DELETE", f"/api/v1/{root}/{instance_id}{suffix}")
                stopped += 1
            except NotFound:
                pass
            self.view.forget(state, kind, instance_id)
        if not stopped:
            raise NotFound(f"no {kind} instance {instance_id!r} running in the cluster")

    def stop_all(self, kind: str) -> None:
        root = "cam" if kind == "camera" else "pipeline"
        self.each_node(lambda s: s.client.call("DELETE", f"/api/v1/{root}"))

    def each_node(self, call) -> dict[str, object]:
        """`call(state)` on every usable node at once: its answer or its error, by node."""
        states = self.view.usable()
        futures = {s.name: self._pool.submit(call, s) for s in states}
        results = {}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except (Unavailable, NodeError, NotFound, BadRequest, Conflict) as error:
                results[name] = error
        return results

    def metrics(self) -> str:
        pages = self.each_node(lambda s: s.client.request("GET", "/metrics", timeout=5).text)
        return metrics.merge(
            [page for page in pages.values() if isinstance(page, str)],
            self.nodes_summary(),
        )

    # --- backgrounds ------------------------------------------------------------------------------
    def collect_background(self, camera: str, n_images: int) -> str:
        """Taken on the camera's node, then kept in the cluster's store."""
        if not 1 <= n_images <= MAX_BACKGROUND_IMAGES:
            raise BadRequest(f"n_images must be between 1 and {MAX_BACKGROUND_IMAGES}")
        self.stored_camera(camera)
        state = self.camera_node(camera)
        background_id = state.client.call(
            "POST",
            f"/api/v1/pipeline/camera/{camera}/background",
            params={"n_images": n_images},
        )["background_id"]
        payload = state.client.get(f"/api/v1/pipeline/background/{background_id}/image_bytes")
        self.store.save_background(background_id, _image(payload))
        return background_id

    def latest_background(self, camera: str) -> str:
        return self.store.latest_background(camera)

    def background_ids(self, camera: str) -> list[str]:
        return self.store.background_ids(camera)

    def background(self, background_id: str) -> np.ndarray:
        return self.store.get_background(background_id)

    def save_background(self, background_id: str, array: np.ndarray) -> None:
        self.store.save_background(background_id, arrays.check_background(array))

    # --- scripts and libs -----------------------------------------------------------------------
    def file_names(self, kind: str) -> list[str]:
        return self.store.file_names(kind)

    def get_file(self, kind: str, name: str) -> bytes:
        return self.store.get_file(kind, name)

    def save_file(self, kind: str, name: str, data: bytes) -> None:
        validation.upload(kind, name, data, self.store.data_dir)
        self.store.save_file(kind, name, data)

    def delete_file(self, kind: str, name: str) -> None:
        self.store.delete_file(kind, name)

    # --- logs -----------------------------------------------------------------------------------
    def logs(self) -> list[list]:
        return [camserver_entry(record) for record in self.log_ring.records]

    def instance_logs(self, instance_id: str) -> list[list]:
        for kind in ("pipeline", "camera"):
            try:
                state = self.node_of(kind, instance_id)
            except NotFound:
                continue
            return state.client.get(f"/api/v1/logs/instance/{instance_id}")["logs"]
        raise NotFound(f"no instance {instance_id!r} in the cluster")


def _image(payload: dict) -> np.ndarray:
    """The array of a node's image_bytes answer (a broken one is the node's fault: 502)."""
    try:
        return arrays.array_from_image_bytes(payload.get("image"))
    except (BadRequest, AttributeError) as error:
        raise NodeError(f"a node answered image_bytes with no image: {error}") from None
