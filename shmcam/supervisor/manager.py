"""The node's instances: which run, on which ports, how they start and stop.

One camera instance per camera, started when a pipeline or a client needs it. Pipelines are
private (own id) or shared (a saved config's name, or reused for an equal config); any of them
is read-only (refuses config updates) only if its config says `read_only`, as CamServer's.
The watchdog (watchdog.py) restarts what must run and stops what nobody uses. Waiting for an
instance (its start, a config update, its stop) never holds the manager lock: the node answers
other calls meanwhile, whatever one instance does.

Cascades (`input_pipeline`) on this node read their upstream's record ring in place; a pipeline
writes that ring only while such a reader runs (`sync_record_outputs`). External pipelines run
a program (workers/external.py) whose output ring shmcam publishes.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from pathlib import Path

from shmcam.external import output_ring_base
from shmcam.names import check_name
from shmcam.shm import create_record_ring, generations, ring_base, stats_name
from shmcam.sources import probe
from shmcam.sources.config import DEFAULT_SOURCE_TYPE
from shmcam.workers import split
from shmcam.workers.pipeline_types import (
    bind_address,
    connect_address,
    output_mode,
    pipeline_type,
    program_output,
)

from . import validation
from .errors import AlreadyRunning, BadRequest, Conflict, NotFound
from .hub import Hub
from .instances import STOP_TIMEOUT, Instance
from .settings import Settings
from .store import ConfigStore
from .succession import PidFiles

log = logging.getLogger(__name__)

READY_TIMEOUT = 60.0
UPDATE_TIMEOUT = 10.0  # for an instance to apply a live config update
MAX_CASCADE = 16  # pipelines reading pipelines reading ...


class Manager:
    def __init__(self, settings: Settings, store: ConfigStore, hub: Hub, pids: PidFiles):
        self.settings = settings
        self.store = store
        self.hub = hub
        self.pids = pids
        self.cameras: dict[str, Instance] = {}
        self.pipelines: dict[str, Instance] = {}
        self.lock = threading.RLock()
        self.stopping = threading.Event()

    def table(self, kind: str) -> dict[str, Instance]:
        return self.cameras if kind == "camera" else self.pipelines

    # --- cameras ----------------------------------------------------------------------------
    def camera_config(self, name: str) -> dict:
        return self._checked_camera(self.store.get_config("camera", name))

    def _checked_camera(self, config) -> dict:
        validation.camera(config)
        validation.camera_limits(config, self.settings.max_frame_bytes)
        return config

    def camera(self, name: str, permanent: bool = False) -> Instance:
        """The running camera instance, started if needed. The start is waited for outside
        the manager lock: the node answers other calls meanwhile."""
        instance, _ = self._camera(name, permanent)
        return instance

    def adopt(self, kind: str, instance_id: str) -> bool:
        """Make a running instance permanent; False if none runs under that id."""
        with self.lock:
            instance = self.table(kind).get(instance_id)
            if instance is None or not instance.alive:
                return False
            instance.permanent = True
            return True

    def _camera(self, name: str, permanent: bool = False) -> tuple[Instance, bool]:
        """The camera instance, and whether this call started it. An on-demand start of a
        camera that is offline is refused with CamServer's message (a permanent one starts
        all the same: it waits for its source)."""
        if not permanent:
            self._verify_online(name)
        with self.lock:
            instance = self.cameras.get(name)
            started = instance is None or not instance.alive
            if started:
                _check_instance_id(name)
                instance = self._spawn_camera(name, self.camera_config(name))
            instance.permanent = instance.permanent or permanent
        return self._started(self.cameras, instance, Conflict), started

    def _verify_online(self, name: str) -> None:
        """CamServer's verify_camera_online before a start, for the sources that have one
        (EPICS), in a short-lived process (never pyepics in the supervisor); not for a camera
        that runs already."""
        with self.lock:
            running = self.cameras.get(name)
            if running is not None and running.alive:
                return
        config = self.camera_config(name)
        if config.get("source_type", DEFAULT_SOURCE_TYPE) not in probe.VERIFIED_BEFORE_START:
            return
        online, reason = probe.is_online(config, name, self.camera_scripts_dir)
        if not online:
            raise Conflict(reason)

    @property
    def camera_scripts_dir(self) -> Path:
        return Path(self.settings.data_dir) / "camera_scripts"

    def _spawn_camera(self, name: str, config: dict) -> Instance:
        instance = self._new_instance("camera", name, config, self.settings.camera_ports)
        self.cameras[name] = instance
        return instance

    def _started(self, table: dict[str, Instance], instance: Instance, error) -> Instance:
        """The instance once it is ready. One that does not start leaves the table (a
        permanent one stays: the watchdog restarts it) and raises `error` saying why."""
        try:
            instance.wait_ready(READY_TIMEOUT)
        except RuntimeError as reason:
            if not instance.permanent:
                with self.lock:
                    if table.get(instance.id) is instance:
                        del table[instance.id]
            raise error(f"{instance.kind} {instance.id} did not start: {reason}") from None
        return instance

    def set_camera_config(self, name: str, config: dict) -> dict:
        """Save a camera config; a running camera restarts with it first, and if it cannot
        run with it, it goes back to the config it had and nothing is saved."""
        validation.camera_name(name)
        self._checked_camera(config)
        self.store.check_config(config, f"camera config {name!r}")
        with self.lock:
            running = self.cameras.get(name)
            if running is not None and running.alive:
                running.stop()
                try:
                    self._started(self.cameras, self._spawn_camera(name, config), Conflict)
                except Conflict:
                    self._started(self.cameras, self._spawn_camera(name, running.config), Conflict)
                    raise
            self.store.save_config("camera", name, config)
        return config

    # --- pipelines --------------------------------------------------------------------------
    def create_pipeline(
        self,
        config: dict,
        instance_id: str | None = None,
        *,
        shared: bool = False,
        permanent: bool = False,
    ) -> Instance:
        """Start a pipeline. One that does not start changes nothing: a camera or upstream
        started for it is stopped again."""
        validation.pipeline(config, self.store.config_names("camera"))
        self._code_available(config)
        self.places_allowed(config)
        self.store.check_config(config, "pipeline config")
        config = validation.expanded_pipeline(config)  # as CamServer's clients read it back
        instance_id = instance_id or str(uuid.uuid4())
        _check_instance_id(instance_id)
        self._check_cascade(config, instance_id)
        self._check_not_running(instance_id)
        started: list[Instance] = []
        try:
            source = self._input(config, instance_id, started)
            with self.lock:
                self._check_not_running(instance_id)  # nobody took the id meanwhile
                self._feed(source)
                instance = self._new_instance(
                    "pipeline",
                    instance_id,
                    config,
                    self.settings.pipeline_ports,
                    shared=shared,
                    permanent=permanent,
                    source=source,
                    output=self._output(config),
                )
                self.pipelines[instance_id] = instance
            return self._started(self.pipelines, instance, BadRequest)
        except Exception:
            for upstream in reversed(started):
                if not upstream.permanent and not self._readers_of(upstream):
                    upstream.stop()
            raise

    def _code_available(self, config: dict) -> str | None:
        """Refuse a config whose code is not there; the program an external pipeline runs."""
        if pipeline_type(config) == "external":
            return validation.program_available(
                config,
                self.store.file_names("program"),
                Path(self.settings.data_dir) / "programs",
                self.settings.executable_dirs,
            )
        validation.function_available(
            config,
            self.store.file_names("script"),
            self.settings.function_dirs,
            self.store.file_names("lib"),
        )

    def places_allowed(self, config: dict) -> None:
        """Refuse a config that writes files or asks a dispatcher where this node may not."""
        validation.node_places(config, self.settings.file_dirs, self.settings.dispatcher_urls)

    def _check_not_running(self, instance_id: str) -> None:
        if self._running_pipeline(instance_id) is not None:
            raise AlreadyRunning(
                f"Instance with id '{instance_id}' is already present and running. Use another "
                f"instance_id or stop the current instance if you want to reuse the same "
                f"instance_id."
            )

    def _running_pipeline(self, instance_id: str) -> Instance | None:
        """The live pipeline instance of that id (perhaps still starting), or None."""
        with self.lock:
            instance = self.pipelines.get(instance_id)
        return instance if instance is not None and instance.alive else None

    def _check_cascade(self, config: dict, instance_id: str) -> None:
        """Refuse a cascade that reads itself (A -> B -> A), however long the loop."""
        seen = [instance_id]
        upstream = config.get("input_pipeline")
        while upstream:
            if upstream in seen:
                raise BadRequest(
                    f"pipeline config: input_pipeline makes a loop "
                    f"({' -> '.join([*seen, upstream])}); a pipeline cannot read its own output"
                )
            if len(seen) > MAX_CASCADE:
                raise BadRequest(f"pipeline config: more than {MAX_CASCADE} cascaded pipelines")
            seen.append(upstream)
            running = self._running_pipeline(upstream)
            try:
                upstream_config = (
                    running.config if running else self.store.get_config("pipeline", upstream)
                )
            except (NotFound, BadRequest):
                return  # it will fail to start with its own clear error
            upstream = upstream_config.get("input_pipeline")

    def _input(self, config: dict, instance_id: str, started: list[Instance]) -> dict | None:
        """Where a pipeline's frames come from unless from its camera's ring (None): the
        stream it names, its upstream pipeline's (a cascade: started from the saved config
        of that name if not running) or, for a stream pipeline, its camera's stream; and the
        second stream merged into it (`stream2`, `mode2`). What this starts is appended to
        `started`. bsread addresses and channels the instance reads itself."""
        camera = camera_read(config)
        stream, mode = config.get("input_stream"), config.get("input_mode") or "SUB"
        if camera is not None:
            instance, new = self._camera(camera)
            if new:
                started.append(instance)
            if pipeline_type(config) != "stream":
                return None
            stream, mode = f"tcp://127.0.0.1:{instance.spec['port']}", "SUB"
        if pipeline_type(config) == "fanin":  # binds the address its workers push to
            return {"stream": bind_address(stream), "mode": "PULL", "bind": True}
        stream2, mode2 = config.get("input_stream2"), config.get("input_mode2") or "SUB"
        if config.get("input_pipeline2"):
            stream2, mode2 = loopback(self._upstream(config["input_pipeline2"], started))
        if config.get("input_pipeline"):
            upstream = self._upstream(config["input_pipeline"], started)
            if reads_records(config, upstream):
                return {"records": upstream.spec["output_ring"], "upstream": upstream.id}
            stream, mode = loopback(upstream)
        if stream is None and stream2 is None:
            return None  # custom, bsread addresses or channels, an external program without input
        return {"stream": stream, "mode": mode, "stream2": stream2, "mode2": mode2}

    def _upstream(self, name: str, started: list[Instance]) -> Instance:
        """A pipeline of this node, started if not running."""
        running = self._running_pipeline(name)
        source = self.shared_pipeline(name)
        if running is None:
            started.append(source)
        return source

    def _output(self, config: dict) -> dict | None:
        """output_pipeline: the address the named pipeline's config reads (its input_stream,
        which it binds), for the sender to connect to (CamServer's fan-in wiring)."""
        name = config.get("output_pipeline")
        if not name:
            return None
        running = self._running_pipeline(name)
        target = running.config if running else self.store.get_config("pipeline", name)
        address = target.get("input_stream")
        if not isinstance(address, str) or "://" not in address:
            raise BadRequest(
                f"pipeline config: output_pipeline {name!r} has no input_stream to send to"
            )
        return {"stream": connect_address(address)}

    def reopen_input(self, instance: Instance) -> None:
        """Before a pipeline's restart: resolve its input again (and feed its ring)."""
        source = self._input(instance.config, instance.id, [])
        with self.lock:
            self._feed(source)
            instance.spec["input"] = source

    # --- record rings of cascades -------------------------------------------------------------
    def _feed(self, source: dict | None) -> None:
        """(Under the lock.) Before a reader of a record ring starts: its writer writes it."""
        upstream = self.pipelines.get((source or {}).get("upstream"))
        if upstream is not None and upstream.alive and records_on_demand(upstream.config):
            self._write_records(upstream, True)

    def sync_record_outputs(self) -> None:
        """Every live pipeline writes its record ring exactly while a live pipeline of this
        node reads it (the watchdog calls this periodically; readers come and go)."""
        with self.lock:
            pipelines = [p for p in self.pipelines.values() if p.alive]
            read = {(p.spec.get("input") or {}).get("records") for p in pipelines}
            for pipeline in pipelines:
                if records_on_demand(pipeline.config):
                    self._write_records(pipeline, pipeline.spec["output_ring"] in read)

    def _write_records(self, pipeline: Instance, wanted: bool) -> None:
        """(Under the lock.) Tell a pipeline to start or stop writing its record ring; the
        ring is made first, so that its readers attach at once. It stays until the
        pipeline's end (release_segments)."""
        if wanted == pipeline.spec["write_records"]:
            return
        base = pipeline.spec["output_ring"]
        if wanted and not generations(base):
            create_record_ring(base, self.settings.ring_slots)
        pipeline.spec["write_records"] = wanted
        pipeline.link.send({"write_records": wanted}, replaces="write_records")
        log.info("pipeline %s %s its record ring", pipeline.id, "writes" if wanted else "stops")

    def shared_pipeline(self, name: str) -> Instance:
        """The instance named after a saved config, started from it if not running."""
        instance = self._running_pipeline(name)
        if instance is None:
            try:
                config = self.store.get_config("pipeline", name)
            except NotFound:
                raise NotFound(
                    f"Instance '{name}' is not present on server and it is not a saved "
                    f"pipeline name."
                ) from None
            try:
                return self.create_pipeline(config, name, shared=True)
            except AlreadyRunning:  # started by a concurrent call meanwhile: that one it is
                instance = self._running_pipeline(name)
                if instance is None:
                    raise
        return self._started(self.pipelines, instance, BadRequest)

    def pipeline_for_config(self, config: dict) -> Instance:
        """A running shared instance with an equal config, else a new shared one."""
        wanted = validation.expanded_pipeline(config) if isinstance(config, dict) else config
        with self.lock:
            equal = [
                instance
                for instance in self.pipelines.values()
                if instance.shared and instance.alive and instance.config == wanted
            ]
        if equal:
            return self._started(self.pipelines, equal[0], BadRequest)
        return self.create_pipeline(config, shared=True)

    def update_pipeline(self, instance_id: str, update: dict) -> dict:
        """Merge a live update into a running instance (unless it is read_only), applied by
        the instance from its next frame. It answers only once the instance took it; one it
        refuses (a function that does not load) or does not take in time changes nothing."""
        if not isinstance(update, dict):
            raise BadRequest("a config update must be a JSON object")
        if not update:
            raise BadRequest("Config updates cannot be empty.")
        with self.lock:
            instance = self.running_pipeline(instance_id)
            if not instance.alive:
                raise Conflict(
                    f"instance {instance_id} is not running (exit code "
                    f"{instance.poll()}); start a new instance to use another config"
                )
            if instance.read_only:
                raise Conflict(
                    f"Cannot set config on a read only instance. Instance {instance_id} has "
                    f"read_only set; create another instance to change its config"
                )
            if "camera_name" in update and update["camera_name"] != instance.config.get(
                "camera_name"
            ):
                raise BadRequest(
                    "Cannot change the camera name on a running instance. Stop the instance first."
                )
            validation.stream_unchanged(instance.config, update)
            validation.program_unchanged(instance.config, update)
            config = validation.pipeline(
                validation.merge(instance.config, update), self.store.config_names("camera")
            )
            self._code_available(config)
            self.places_allowed(config)
            self.store.check_config(config, "pipeline config")
        instance.update_config(config, UPDATE_TIMEOUT)
        return config

    def running_pipeline(self, instance_id: str) -> Instance:
        instance = self.pipelines.get(instance_id)
        if instance is None:
            raise NotFound(f"no pipeline instance {instance_id!r} on this node")
        return instance

    # --- common -----------------------------------------------------------------------------
    def instances(self, kind: str) -> dict[str, Instance]:
        with self.lock:
            return {k: v for k, v in self.table(kind).items() if v.alive}

    def everything(self) -> list[Instance]:
        """Every instance known, pipelines first (they read the cameras)."""
        with self.lock:
            return [*self.pipelines.values(), *self.cameras.values()]

    def stop(self, kind: str, instance_id: str, forget: bool = False) -> None:
        with self.lock:
            table = self.table(kind)
            instance = table.get(instance_id)
            if instance is None:
                raise NotFound(f"no {kind} instance {instance_id!r} on this node")
            instance.permanent = False  # stopped on purpose: not restarted
            instance.restart_at = None
            if forget:
                del table[instance_id]
        instance.stop()

    def stop_all(self, kind: str) -> None:
        with self.lock:
            table = self.table(kind)
            for instance in table.values():
                instance.permanent = False
                instance.restart_at = None
            chosen = list(table.values())
        stop_together(chosen)

    def shutdown(self) -> None:
        """Stop everything: the pipelines together, then the cameras together, so that however
        many are stuck the whole takes about two stop timeouts."""
        self.stopping.set()
        for kind in ("pipeline", "camera"):
            with self.lock:
                chosen = list(self.table(kind).values())
                for instance in chosen:
                    instance.permanent = False
            stop_together(chosen)

    def _readers_of(self, instance: Instance) -> list[Instance]:
        """Live pipelines reading this camera (its ring or its stream) or this pipeline."""
        with self.lock:
            pipelines = list(self.pipelines.values())
        if instance.kind == "camera":
            return [p for p in pipelines if p.alive and p.spec["camera"] == instance.id]
        return [
            p
            for p in pipelines
            if p.alive
            and instance.id in (p.config.get("input_pipeline"), p.config.get("input_pipeline2"))
        ]

    def _new_instance(
        self, kind: str, instance_id: str, config: dict, ports, source=None, output=None, **flags
    ) -> Instance:
        port = config.get("port") or self._free_port(ports)
        camera = instance_id if kind == "camera" else camera_read(config)
        data = Path(self.settings.data_dir)
        pipeline = kind == "pipeline"
        spec = {
            "node": self.settings.node,
            "instance_id": instance_id,
            "camera": camera,
            "ring": camera and ring_base(self.settings.node, camera),
            "preview": ring_base(self.settings.node, instance_id, "preview") if pipeline else None,
            "output_ring": output_ring_base(self.settings.node, instance_id) if pipeline else None,
            "write_records": False,
            "ring_slots": self.settings.ring_slots,
            "stats": stats_name(self.settings.node, f"{kind[0]}-{instance_id}"),
            "port": port,
            "input": source,
            "output": output,
            "scripts_dir": str(data / "scripts"),
            "function_dirs": [str(d) for d in self.settings.function_dirs],
            "camera_scripts_dir": str(data / "camera_scripts"),
            "backgrounds_dir": str(data / "backgrounds"),
            "store_dir": str(data / "store"),
            "file_dirs": [str(d) for d in self.settings.file_dirs],
            "max_frame_bytes": self.settings.max_frame_bytes,
        }
        if pipeline and pipeline_type(config) == "external":
            spec["program"] = self._program(instance_id, config)
        instance = Instance(
            kind,
            instance_id,
            config,
            spec,
            f"tcp://{self.settings.public_host}:{port}",
            hub=self.hub,
            pids=self.pids,
            omp_threads=self.settings.omp_threads,
            memory_limit=self.settings.instance_memory_mb * 2**20,
            **flags,
        )
        instance.start()
        return instance

    def _program(self, instance_id: str, config: dict) -> dict:
        """What an external pipeline's process needs to start its program."""
        config_dir = Path(self.settings.run_dir) / self.settings.node / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        return {
            "argv": [self._code_available(config), *config.get("args", [])],
            "env": config.get("env", {}),
            "output": program_output(config),
            "config_file": str(config_dir / f"{instance_id}.json"),
        }

    def _free_port(self, ports) -> int:
        """A port of the range that no instance holds (a permanent one being restarted keeps
        its port) and that nothing else on the host is bound to."""
        with self.lock:
            taken = {i.spec["port"] for i in self.everything() if i.holds_port}
        for port in range(ports[0], ports[1] + 1):
            if port not in taken and _bindable(port):
                return port
        raise Conflict(
            f"All ports are used. Stop some instances before opening a new stream. (No free "
            f"port left in {list(ports)}; or widen the node's range.)"
        )


def stop_together(instances: list[Instance], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM to all, then wait for all at once: stuck ones are killed at one deadline."""
    for instance in instances:
        instance.terminate()
    threads = [
        threading.Thread(target=instance.wait_stopped, args=(timeout,), daemon=True)
        for instance in instances
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def records_on_demand(config: dict) -> bool:
    """Pipelines that write their record ring only while it is read (an external program
    writes its own from the start; a store pipeline has no results to write; a pipeline
    split among workers sends its results from the collector, not into a ring)."""
    return pipeline_type(config) in ("processing", "stream", "custom") and (
        split.parse(config).workers == 1
    )


def reads_records(config: dict, upstream: Instance) -> bool:
    """Whether a cascade reads its upstream pipeline of this node from the upstream's record
    ring, in place, zero-copy: the types that read records (processing, stream, external)
    from an upstream that writes them (records_on_demand, or an external program with an
    output ring), when no second stream is merged in and its frames are not
    shared out among workers. Else it reads the upstream's bsread stream over loopback ZMQ,
    as a cascade of an upstream on another node does (through the coordinator), and as
    the workers of a fanout do (it deals its frames out round robin)."""
    kind = pipeline_type(config)
    reader = (
        kind in ("processing", "stream", "external")
        and not any(config.get(key) for key in validation.SECOND_STREAM_KEYS)
        and (kind == "external" or split.parse(config).workers == 1)
    )
    upstream_kind = pipeline_type(upstream.config)
    writer = records_on_demand(upstream.config) or (
        upstream_kind == "external" and program_output(upstream.config) == "ring"
    )
    return reader and writer


def loopback(upstream: Instance) -> tuple[str, str]:
    """The address and receive mode of a pipeline's stream from this node."""
    mode = "PULL" if output_mode(upstream.config) == "PUSH" else "SUB"
    return f"tcp://127.0.0.1:{upstream.spec['port']}", mode


def camera_read(config: dict) -> str | None:
    """The camera whose frames a pipeline reads (its ring; a stream pipeline its stream), or
    None when it reads another stream or nothing (custom)."""
    kind = pipeline_type(config)
    if (
        kind == "custom"
        or config.get("input_stream")
        or config.get("input_pipeline")
        or (kind == "stream" and (config.get("bsread_address") or config.get("bsread_channels")))
    ):
        return None
    return config.get("camera_name")


def _check_instance_id(instance_id: str) -> None:
    """Instance ids name shared-memory segments: no dots or path characters (HTTP 400)."""
    try:
        check_name(instance_id, "instance_id")
    except ValueError as error:
        raise BadRequest(str(error)) from None


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True
