"""The node table and the permanent table: cluster.toml's, or the ones set through REST
(`/api/v1/proxy/config`, `/api/v1/proxy/permanent`), kept in the coordinator's data directory
and winning over the file's from then on (as saved configs win over shipped ones)."""

from __future__ import annotations

from shmcam.supervisor.errors import BadRequest
from shmcam.supervisor.store import ConfigStore

from . import settings as cluster_settings
from .keeper import Keeper
from .settings import NodeRule, Settings
from .view import ClusterView

SERVERS, PERMANENT = "servers", "permanent"


class Tables:
    def __init__(self, settings: Settings, store: ConfigStore):
        self.store = store
        saved = store.read_state(SERVERS)
        self._rules = (
            tuple(cluster_settings.node_rule(n, r, f"state {n}") for n, r in saved.items())
            if saved
            else settings.nodes
        )
        self.permanent = store.read_state(PERMANENT) or dict(settings.permanent)
        self.view: ClusterView | None = None
        self.keeper: Keeper | None = None

    def rules(self) -> tuple[NodeRule, ...]:
        return self._rules

    def set_rules(self, rules: tuple[NodeRule, ...]) -> None:
        document = {
            r.name: {
                "url": r.url,
                "enabled": r.enabled,
                "expanding": r.expanding,
                "instances": list(r.instances),
                "cameras": list(r.cameras),
                "groups": list(r.groups),
                "network_gbps": r.network_gbps,
            }
            for r in rules
        }
        self.store.write_state(SERVERS, document)
        self._rules = rules
        self.view.set_rules(rules)
        self.keeper.wake()

    def set_permanent(self, table) -> dict[str, str]:
        """Checked (every config must exist: CamServer dropped unknown ones silently),
        persisted, applied at once: new ones start, removed ones stop."""
        try:
            table = cluster_settings.permanent_table(table, "permanent instances")
        except cluster_settings.SettingsError as error:
            raise BadRequest(str(error)) from None
        self.check_configs(table)
        self.store.write_state(PERMANENT, table)
        self.permanent = table
        self.keeper.set_permanent(table)
        return table

    def check_configs(self, table: dict[str, str]) -> None:
        cameras = set(self.store.config_names("camera"))
        pipelines = set(self.store.config_names("pipeline"))
        for name, config in table.items():
            camera = config.removeprefix("camera:")
            if config.startswith("camera:") and camera not in cameras:
                raise BadRequest(f"permanent {name!r}: no camera config {camera!r}")
            if not config.startswith("camera:") and config not in pipelines | cameras:
                raise BadRequest(
                    f"permanent {name!r}: no pipeline or camera config {config!r}; save it first"
                )
