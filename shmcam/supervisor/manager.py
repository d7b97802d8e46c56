"""The node's instances: which run, on which ports, when they start, stop and restart.

One camera instance per camera, started when a pipeline or a client needs it. Pipelines are
private (own id), shared (a saved config's name) or read-only shared (reused for equal configs).
A watchdog thread stops on-demand instances after `no_client_timeout` without clients and
restarts permanent ones with backoff.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from pathlib import Path

from shmcam.names import check_name
from shmcam.shm import ring_base, stats_name
from shmcam.workers.pipeline_types import pipeline_type

from . import validation
from .errors import BadRequest, Conflict, NotFound
from .instances import Instance
from .settings import Settings
from .store import ConfigStore

log = logging.getLogger(__name__)

DEFAULT_NO_CLIENT_TIMEOUT = 10.0
READY_TIMEOUT = 60.0
WATCH_PERIOD = 0.5
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
# What a pipeline reads is set up at its start: these keys cannot change on a running instance.
INPUT_KEYS = (
    "camera_name",
    "pipeline_type",
    "input_stream",
    "input_stream2",
    "input_pipeline",
    "input_mode",
)


class Manager:
    def __init__(self, settings: Settings, store: ConfigStore):
        self.settings = settings
        self.store = store
        self.cameras: dict[str, Instance] = {}
        self.pipelines: dict[str, Instance] = {}
        self.lock = threading.RLock()
        self._stopping = threading.Event()
        self._restart_due: dict[str, float] = {}
        self._watchdog = threading.Thread(target=self._watch, name="watchdog", daemon=True)

    def start(self) -> None:
        """Start the watchdog, and the permanent instances in the background: the REST API
        answers while they come up."""
        threading.Thread(target=self._start_permanent, name="permanent", daemon=True).start()
        self._watchdog.start()

    def _start_permanent(self) -> None:
        for instance_id, config_name in self.settings.permanent.items():
            try:
                self.create_pipeline(
                    self.store.get_config("pipeline", config_name), instance_id, permanent=True
                )
            except Exception as error:
                log.error(
                    "permanent instance %s (%s) did not start: %s", instance_id, config_name, error
                )

    # --- cameras ----------------------------------------------------------------------------
    def camera_config(self, name: str) -> dict:
        return validation.camera(self.store.get_config("camera", name))

    def camera(self, name: str) -> Instance:
        """The running camera instance, started if needed. The start is waited for outside
        the manager lock: the node answers other calls meanwhile."""
        with self.lock:
            instance = self.cameras.get(name)
            if instance is None or not instance.alive:
                _check_instance_id(name)
                instance = self._spawn_camera(name, self.camera_config(name))
        return self._started(self.cameras, instance, Conflict)

    def _start_camera(self, name: str, config: dict) -> Instance:
        """Start a camera and wait for it, under the lock (a config change is one step)."""
        with self.lock:
            return self._started(self.cameras, self._spawn_camera(name, config), Conflict)

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
        validation.camera(config)
        with self.lock:
            running = self.cameras.get(name)
            if running is not None and running.alive:
                running.stop()
                try:
                    self._start_camera(name, config)
                except Conflict:
                    self._start_camera(name, running.config)
                    raise
            self.store.save_config("camera", name, config)
        return config

    # --- pipelines --------------------------------------------------------------------------
    def create_pipeline(
        self,
        config: dict,
        instance_id: str | None = None,
        *,
        read_only: bool = False,
        permanent: bool = False,
    ) -> Instance:
        validation.pipeline(config, self.store.config_names("camera"))
        validation.function_available(config, self.store.file_names("script"))
        instance_id = instance_id or str(uuid.uuid4())
        _check_instance_id(instance_id)
        self._check_not_running(instance_id)
        source = self._input(config, instance_id)  # may start a camera or an upstream
        with self.lock:
            self._check_not_running(instance_id)  # nobody took the id meanwhile
            instance = self._new_instance(
                "pipeline",
                instance_id,
                config,
                self.settings.pipeline_ports,
                read_only=read_only,
                permanent=permanent,
                source=source,
            )
            self.pipelines[instance_id] = instance
        return self._started(self.pipelines, instance, BadRequest)

    def _check_not_running(self, instance_id: str) -> None:
        if self._running_pipeline(instance_id) is not None:
            raise Conflict(
                f"instance {instance_id} is already running; stop it first "
                f"or choose another instance_id"
            )

    def _running_pipeline(self, instance_id: str) -> Instance | None:
        """The live pipeline instance of that id (perhaps still starting), or None."""
        with self.lock:
            instance = self.pipelines.get(instance_id)
        return instance if instance is not None and instance.alive else None

    def _input(self, config: dict, instance_id: str) -> dict | None:
        """Where a pipeline's frames come from unless from its camera's ring (None): the
        stream it names, its upstream pipeline's (a cascade: started from the saved config
        of that name if not running) or, for a stream pipeline, its camera's stream. The
        camera a pipeline reads is started first."""
        camera = camera_read(config)
        if camera is not None:
            instance = self.camera(camera)
            if pipeline_type(config) != "stream":
                return None
            return {
                "stream": f"tcp://127.0.0.1:{instance.spec['port']}",
                "mode": "SUB",
                "stream2": config.get("input_stream2"),
            }
        stream, mode = config.get("input_stream"), config.get("input_mode") or "SUB"
        upstream = config.get("input_pipeline")
        if upstream:
            if upstream == instance_id:
                raise BadRequest(
                    f"pipeline config: input_pipeline {upstream!r} is the instance itself"
                )
            source = self.shared_pipeline(upstream)
            stream = f"tcp://127.0.0.1:{source.spec['port']}"
            mode = "PULL" if source.config.get("mode") == "PUSH" else "SUB"
        if stream is None:
            return None  # a custom pipeline
        return {"stream": stream, "stream2": config.get("input_stream2"), "mode": mode}

    def shared_pipeline(self, name: str) -> Instance:
        """The instance named after a saved config, started from it if not running."""
        instance = self._running_pipeline(name)
        if instance is None:
            try:
                return self.create_pipeline(
                    self.store.get_config("pipeline", name), name, read_only=True
                )
            except Conflict:  # started by a concurrent call meanwhile: that one it is
                instance = self._running_pipeline(name)
                if instance is None:
                    raise
        return self._started(self.pipelines, instance, BadRequest)

    def pipeline_for_config(self, config: dict) -> Instance:
        """A running read-only instance with an equal config, else a new read-only one."""
        with self.lock:
            equal = [
                instance
                for instance in self.pipelines.values()
                if instance.read_only and instance.alive and instance.config == config
            ]
        if equal:
            return self._started(self.pipelines, equal[0], BadRequest)
        return self.create_pipeline(config, read_only=True)

    def update_pipeline(self, instance_id: str, update: dict) -> dict:
        """Merge a live update into a running private instance; refuse what it cannot apply
        (the worker cannot report a failure back), and change nothing then."""
        if not isinstance(update, dict):
            raise BadRequest("a config update must be a JSON object")
        with self.lock:
            instance = self.running_pipeline(instance_id)
            if not instance.alive:
                raise Conflict(
                    f"instance {instance_id} is not running (exit code "
                    f"{instance.poll()}); start a new instance to use another config"
                )
            if instance.read_only:
                raise Conflict(
                    f"instance {instance_id} is read-only (shared); create a "
                    f"private instance to change its config"
                )
            fixed = [
                key
                for key in INPUT_KEYS
                if key in update and update[key] != instance.config.get(key)
            ]
            if fixed:
                raise BadRequest(
                    f"{', '.join(fixed)} cannot change on a running instance (its "
                    f"input is set up at start); start a new instance instead"
                )
            validation.stream_unchanged(instance.config, update)
            config = validation.pipeline(
                validation.merge(instance.config, update), self.store.config_names("camera")
            )
            validation.function_available(config, self.store.file_names("script"))
            instance.send_config(config)
            return config

    def running_pipeline(self, instance_id: str) -> Instance:
        instance = self.pipelines.get(instance_id)
        if instance is None:
            raise NotFound(f"no pipeline instance {instance_id!r} on this node")
        return instance

    # --- common -----------------------------------------------------------------------------
    def instances(self, kind: str) -> dict[str, Instance]:
        with self.lock:
            table = self.cameras if kind == "camera" else self.pipelines
            return {k: v for k, v in table.items() if v.alive}

    def stop(self, kind: str, instance_id: str, forget: bool = False) -> None:
        with self.lock:
            table = self.cameras if kind == "camera" else self.pipelines
            instance = table.get(instance_id)
            if instance is None:
                raise NotFound(f"no {kind} instance {instance_id!r} on this node")
            instance.permanent = False  # stopped on purpose: not restarted
            if forget:
                del table[instance_id]
        instance.stop()

    def stop_all(self, kind: str) -> None:
        for instance_id in list(self.instances(kind)):
            self.stop(kind, instance_id)

    def shutdown(self) -> None:
        """Stop everything (pipelines first, then the cameras they read)."""
        self._stopping.set()
        with self.lock:
            everything = [*self.pipelines.values(), *self.cameras.values()]
        for instance in everything:
            instance.permanent = False
            instance.stop()

    def _new_instance(
        self, kind: str, instance_id: str, config: dict, ports, source=None, **flags
    ) -> Instance:
        port = config.get("port") or self._free_port(ports)
        camera = instance_id if kind == "camera" else camera_read(config)
        data = Path(self.settings.data_dir)
        spec = {
            "node": self.settings.node,
            "instance_id": instance_id,
            "camera": camera,
            "ring": camera and ring_base(self.settings.node, camera),
            "preview": None
            if kind == "camera"
            else ring_base(self.settings.node, instance_id, "preview"),
            "ring_slots": self.settings.ring_slots,
            "stats": stats_name(self.settings.node, f"{kind[0]}-{instance_id}"),
            "port": port,
            "input": source,
            "scripts_dir": str(data / "scripts"),
            "function_dirs": [str(d) for d in self.settings.function_dirs],
            "camera_scripts_dir": str(data / "camera_scripts"),
            "backgrounds_dir": str(data / "backgrounds"),
            "store_dir": str(data / "store"),
        }
        instance = Instance(
            kind,
            instance_id,
            config,
            spec,
            f"tcp://{self.settings.public_host}:{port}",
            omp_threads=self.settings.omp_threads,
            **flags,
        )
        instance.start()
        return instance

    def _free_port(self, ports) -> int:
        taken = {
            i.spec["port"] for i in (*self.cameras.values(), *self.pipelines.values()) if i.alive
        }
        for port in range(ports[0], ports[1] + 1):
            if port not in taken and _bindable(port):
                return port
        raise Conflict(f"no free port left in {list(ports)}; stop instances or widen the range")

    # --- watchdog ---------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_PERIOD):
            try:
                self._check()
            except Exception:
                log.exception("watchdog check failed")

    def _check(self) -> None:
        now = time.monotonic()
        with self.lock:
            everything = [*self.pipelines.values(), *self.cameras.values()]
        for instance in everything:
            code = instance.poll()
            if code is not None:
                self._ended(instance, code, now)
                continue
            instance.update_rates()
            if not instance.permanent:
                self._stop_if_idle(instance, now)

    def _needed(self, instance: Instance) -> bool:
        """Permanent instances, and cameras that running pipelines read, come back if they die."""
        return instance.permanent or (instance.kind == "camera" and self._has_pipelines(instance))

    def _has_pipelines(self, camera: Instance) -> bool:
        """Whether running pipelines read this camera (its ring, or its stream)."""
        return any(p.alive and p.spec["camera"] == camera.id for p in list(self.pipelines.values()))

    def _ended(self, instance: Instance, code: int, now: float) -> None:
        if not self._needed(instance) or self._stopping.is_set():
            if not instance.reaped:
                instance.reaped = True
                instance.release_segments()
                log.info(
                    "%s %s ended with exit code %s%s",
                    instance.kind,
                    instance.id,
                    code,
                    f" ({instance.finished})" if instance.finished else "",
                )
            return
        due = self._restart_due.get(instance.id)
        if due is None:
            delay = BACKOFF[min(instance.restarts, len(BACKOFF) - 1)]
            log.warning(
                "%s %s died (exit code %s): restarting in %g s",
                instance.kind,
                instance.id,
                code,
                delay,
            )
            instance.release_segments()
            self._restart_due[instance.id] = now + delay
        elif now >= due:
            del self._restart_due[instance.id]
            instance.restarts += 1
            try:
                if instance.kind == "pipeline":
                    instance.spec["input"] = self._input(instance.config, instance.id)
                instance.start()
            except Exception as error:
                instance.last_error = str(error)
                log.error("restart of %s failed: %s", instance.id, error)

    def _stop_if_idle(self, instance: Instance, now: float) -> None:
        timeout = instance.config.get("no_client_timeout", DEFAULT_NO_CLIENT_TIMEOUT)
        if timeout is None or timeout <= 0 or not instance.ready:
            return  # an instance still starting has had no chance to get clients
        busy = (
            instance.counters().get("clients", 0) > 0 or pipeline_type(instance.config) == "store"
        )  # it writes files, not streams
        if instance.kind == "camera":
            busy = busy or self._has_pipelines(instance)
        if busy or instance.idle_since is None:
            instance.idle_since = None if busy else now
            return
        if now - instance.idle_since >= timeout:
            log.info("%s %s: no clients for %g s, stopping", instance.kind, instance.id, timeout)
            instance.stop()


def camera_read(config: dict) -> str | None:
    """The camera whose frames a pipeline reads (its ring; a stream pipeline its stream), or
    None when it reads another stream or nothing (custom)."""
    if (
        pipeline_type(config) == "custom"
        or config.get("input_stream")
        or config.get("input_pipeline")
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
