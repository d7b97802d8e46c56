"""Cluster settings: /etc/shmcam/cluster.toml, strictly validated like the node's.

The node table (`[nodes.<name>]`) and the permanent instances (`[permanent]`) may also be set
through REST (`/api/v1/proxy/config`, `/api/v1/proxy/permanent`, CamServer's shapes); those are
kept in the coordinator's data directory and win over the file's at the next start, as saved
configs win over shipped ones.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from shmcam.names import check_name

DEFAULT_CONFIG = Path("/etc/shmcam/cluster.toml")


class SettingsError(ValueError):
    """The cluster configuration is invalid; the message names the key."""


@dataclass(frozen=True)
class NodeRule:
    """One node and what may run there."""

    name: str
    url: str  # its supervisor's REST URL
    enabled: bool = True  # false: nothing is placed there, nothing it runs is used
    expanding: bool = True  # false: only what is pinned here runs here
    instances: tuple[str, ...] = ()  # pinned here: "name" or "name:port"
    cameras: tuple[str, ...] = ()  # these cameras, and pipelines of them, run here
    groups: tuple[str, ...] = ()  # pipelines asking for a `node_group` may run here
    network_gbps: float = 10.0  # its network, to weigh measured traffic against

    def pinned(self) -> dict[str, int | None]:
        """Pinned instance names and their fixed ports (None: any)."""
        pins = {}
        for entry in self.instances:
            name, _, port = entry.partition(":")
            pins[name] = int(port) if port else None
        return pins


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8890
    data_dir: Path = Path("/var/lib/shmcam-coordinator")  # the cluster's config store
    token_file: Path | None = None  # required on mutating calls when set
    node_token_file: Path | None = None  # what the coordinator sends to the nodes
    node_timeout: float = 3.0  # s without an answer before a node counts as down
    poll_interval: float = 0.5  # s between two polls of a node
    rest_threads: int = 16
    nodes: tuple[NodeRule, ...] = ()
    permanent: dict[str, str] = field(default_factory=dict)  # instance -> config name


_NODE_KEYS = {f.name for f in dataclasses.fields(NodeRule)} - {"name"}


def load(path: Path | None = None, **overrides) -> Settings:
    """Settings from a TOML file (if given and present), command-line overrides on top."""
    raw: dict = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            if path != DEFAULT_CONFIG:
                raise SettingsError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as error:
            raise SettingsError(f"{path}: not valid TOML: {error}") from None
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(raw, source=str(path or "settings"))


def from_dict(raw: dict, source: str = "settings") -> Settings:
    known = {f.name for f in dataclasses.fields(Settings)}
    values = {}
    for key, value in raw.items():
        if key not in known:
            raise SettingsError(f"{source}: unknown key {key!r}; known keys: {', '.join(known)}")
        values[key] = _check(key, value, source)
    return Settings(**values)


def _check(key: str, value, source: str):
    def bad(expected: str):
        return SettingsError(f"{source}: {key} must be {expected}, got {value!r}")

    if key == "host":
        if not isinstance(value, str) or not value:
            raise bad("a host name")
        return value
    if key in ("port", "rest_threads"):
        low, high = (0, 65535) if key == "port" else (4, 256)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise bad(f"an integer from {low} to {high}")
        return value
    if key in ("node_timeout", "poll_interval"):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0.05 <= value <= 3600
        ):
            raise bad("a number of seconds from 0.05")
        return float(value)
    if key in ("data_dir", "token_file", "node_token_file"):
        if not isinstance(value, (str, Path)) or not str(value):
            raise bad("a path")
        return Path(value)
    if key == "nodes":
        if not isinstance(value, dict):
            raise bad("a table of [nodes.<name>] tables")
        return tuple(
            node_rule(name, rule, f"{source}: nodes.{name}") for name, rule in value.items()
        )
    if key == "permanent":
        return permanent_table(value, f"{source}: permanent")
    raise AssertionError(key)


def node_rule(name, rule, where: str) -> NodeRule:
    """One node's rule from its table (cluster.toml or CamServer's servers.json entry)."""
    try:
        check_name(name, "node name")
    except ValueError as error:
        raise SettingsError(f"{where}: {error}") from None
    if not isinstance(rule, dict):
        raise SettingsError(f"{where} must be a table with at least url")
    unknown = set(rule) - _NODE_KEYS
    if unknown:
        raise SettingsError(
            f"{where}: unknown key {sorted(unknown)[0]!r}; known: {', '.join(sorted(_NODE_KEYS))}"
        )
    url = rule.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise SettingsError(f"{where}: url must be the node's http://host:port, got {url!r}")
    values = {"name": name, "url": url.rstrip("/")}
    for key in ("enabled", "expanding"):
        if key in rule:
            if not isinstance(rule[key], bool):
                raise SettingsError(f"{where}: {key} must be true or false, got {rule[key]!r}")
            values[key] = rule[key]
    for key in ("instances", "cameras", "groups"):
        if key in rule:
            entries = rule[key]
            if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
                raise SettingsError(f"{where}: {key} must be a list of names, got {entries!r}")
            values[key] = tuple(
                _pin(e, where) if key == "instances" else e
                for e in entries
                if not e.startswith("#")
            )
    if "network_gbps" in rule:
        speed = rule["network_gbps"]
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not speed > 0:
            raise SettingsError(f"{where}: network_gbps must be a positive number, got {speed!r}")
        values["network_gbps"] = float(speed)
    return NodeRule(**values)


def _pin(entry: str, where: str) -> str:
    name, _, port = entry.partition(":")
    try:
        check_name(name, "instance name")
    except ValueError as error:
        raise SettingsError(f"{where}: instances: {error}") from None
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise SettingsError(f"{where}: instances: {entry!r}: the port must be 1 to 65535")
    return entry


def permanent_table(value, where: str) -> dict[str, str]:
    """CamServer's {instance: config} (empty config: the instance's name; '#' comments)."""
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SettingsError(f"{where} must be a table of instance = config name")
    table = {}
    for name, config in value.items():
        if name.startswith("#"):
            continue
        try:
            check_name(name, "instance name")
            check_name((config or name).removeprefix("camera:"), "config name")
        except ValueError as error:
            raise SettingsError(f"{where}: {error}") from None
        table[name] = config or name
    return table


def read_token(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as error:
        raise SettingsError(f"{what} {path}: {error.strerror}") from None
    if not token:
        raise SettingsError(f"{what} {path} is empty")
    return token
