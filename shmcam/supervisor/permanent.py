"""A node's permanent instances: those of its shmcam.toml, and those set through REST
(`/api/v1/proxy/permanent`, as on CamServer's managers; the coordinator uses it too), the latter
kept in the data directory so that they survive a restart of the node.

An entry is instance name -> config name, CamServer's `permanent_instances.json`: an empty
config name means the instance's own name, and names starting with `#` are comments. The config
is a pipeline's, unless only a camera has that name or the value says `camera:<name>` (a
permanent camera, whose instance is the camera itself). Setting the table applies it at once:
new entries start, removed ones stop, the others are not touched.
"""

from __future__ import annotations

import logging
import threading

from .errors import AlreadyRunning, BadRequest, Conflict, NotFound
from .manager import Manager

log = logging.getLogger(__name__)

STATE = "permanent"  # <data_dir>/state/permanent.json
CAMERA = "camera:"


class Permanent:
    def __init__(self, manager: Manager):
        self.manager = manager
        self.store = manager.store
        self.fixed = dict(manager.settings.permanent)  # from shmcam.toml
        self._lock = threading.Lock()
        self._rest = self.store.read_state(STATE)

    def table(self) -> dict[str, str]:
        """Every permanent instance of the node: shmcam.toml's, then REST's."""
        return {**self.fixed, **self._rest}

    def settable(self) -> dict[str, str]:
        """The part REST manages (shmcam.toml's entries change with the file only)."""
        return dict(self._rest)

    def start_all(self) -> None:
        """Start the permanent instances, in the background: the REST API answers meanwhile.
        A node a coordinator manages starts only its shmcam.toml's: the REST-set ones are the
        coordinator's, which may have moved them elsewhere while this node was away, and
        sets them again when it sees the node (never two connections to one camera)."""
        table = self.fixed if self.manager.settings.coordinator else self.table()
        threading.Thread(
            target=self._start_each, args=(table,), daemon=True, name="permanent"
        ).start()

    def set(self, table) -> dict[str, str]:
        """Replace the REST-managed table: stop what was removed, start what does not run
        (new entries, and listed ones stopped meanwhile). Every entry is checked first; a bad
        one changes nothing."""
        entries = self._checked(table)
        with self._lock:
            clash = sorted(set(entries) & set(self.fixed))
            if clash:
                raise Conflict(
                    f"{', '.join(clash)} permanent in the node's shmcam.toml already; change "
                    f"them there"
                )
            removed = {k: v for k, v in self._rest.items() if k not in entries}
            self.store.write_state(STATE, entries)
            self._rest = entries
        for name, config_name in removed.items():
            kind = "camera" if config_name.startswith(CAMERA) else "pipeline"
            try:
                self.manager.stop(kind, name)
            except NotFound:
                pass
        self._start_each(entries)
        return dict(entries)

    def config_name(self, instance_id: str) -> str | None:
        """The pipeline config a permanent pipeline runs (its saved config follows live
        updates, as CamServer's), or None."""
        value = self.table().get(instance_id)
        return None if value is None or value.startswith(CAMERA) else value

    def _checked(self, table) -> dict[str, str]:
        if not isinstance(table, dict):
            raise BadRequest("the permanent instances must be a JSON object {instance: config}")
        entries = {}
        cameras = set(self.store.config_names("camera"))
        pipelines = set(self.store.config_names("pipeline"))
        for name, value in table.items():
            if name.startswith("#"):
                continue
            if not isinstance(value, str):
                raise BadRequest(f"permanent {name!r}: the config name must be a string")
            value = value or name
            if value.startswith(CAMERA) or (value not in pipelines and value in cameras):
                camera = value.removeprefix(CAMERA)
                if camera not in cameras:
                    raise BadRequest(f"permanent {name!r}: no camera config {camera!r}")
                if name != camera:
                    raise BadRequest(
                        f"permanent {name!r}: a permanent camera's instance is the camera "
                        f"itself: use {camera!r}: 'camera:{camera}'"
                    )
                entries[name] = CAMERA + camera
            elif value in pipelines:
                entries[name] = value
            else:
                raise BadRequest(
                    f"permanent {name!r}: no pipeline or camera config {value!r}; save it first"
                )
        return entries

    def _start_each(self, table: dict[str, str]) -> None:
        for name, config_name in table.items():
            kind = "camera" if config_name.startswith(CAMERA) else "pipeline"
            if self.manager.adopt(kind, name):
                continue  # running already (started on request): it stays, permanently
            try:
                if kind == "camera":
                    self.manager.camera(name, permanent=True)
                else:
                    config = self.store.get_config("pipeline", config_name)
                    self.manager.create_pipeline(config, name, permanent=True)
            except AlreadyRunning:  # started on request meanwhile: it stays, permanently
                self.manager.adopt(kind, name)
            except Exception as error:
                log.error("permanent %s (%s) did not start: %s", name, config_name, error)
