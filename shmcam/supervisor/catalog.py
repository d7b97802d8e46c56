"""What a config store lists beyond names, the same for a node and for the cluster's store:
CamServer's camera aliases and groups, and a saved pipeline config with `additional_config`
merged over it."""

from __future__ import annotations

import json
import logging

from .errors import BadRequest, NotFound, StorageError
from .store import ConfigStore

log = logging.getLogger(__name__)


def configs(store: ConfigStore, kind: str):
    """(name, config) of every config that reads (a broken one is left out and logged)."""
    for name in store.config_names(kind):
        try:
            yield name, store.get_config(kind, name)
        except (NotFound, BadRequest, StorageError) as error:
            log.warning("%s config %s left out: %s", kind, name, error)


def listed(value) -> list[str]:
    """CamServer's `alias` and `group`: a name or a list of names."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def aliases(store: ConfigStore) -> dict[str, str]:
    return {alias: name for name, c in configs(store, "camera") for alias in listed(c.get("alias"))}


def groups(store: ConfigStore, kind: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, config in configs(store, kind):
        for group in listed(config.get("group")):
            found.setdefault(group, []).append(name)
    return found


def with_additional(config: dict, extra: str | None) -> dict:
    """A saved config with CamServer's `additional_config` (JSON in the query) merged over."""
    if not extra:
        return config
    try:
        merged = json.loads(extra, parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:
        raise BadRequest(f"additional_config is not JSON: {error}") from None
    if not isinstance(merged, dict):
        raise BadRequest("additional_config must be a JSON object")
    return {**config, **merged}


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")
