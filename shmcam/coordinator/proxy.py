"""`/api/v1/proxy`: CamServer's manager routes (docs/spec/camserver.md §5.4), so that
`ProxyClient`, the cluster page and CamServer's tools work against the coordinator.

Where CamServer's behaviour is a bug, shmcam does better and says so here: configs set through
`/api/v1/proxy/<name>/config` are validated (CamServer saved them raw), a permanent table naming
configs that do not exist is refused (CamServer dropped them silently), and server logs are
served at the paths the server side has (`ProxyClient` asked for others).
"""

from __future__ import annotations

import math

from flask import Blueprint, Response

import shmcam
from shmcam.supervisor import validation
from shmcam.supervisor.api.common import CHANGE, CONFIG, READ, config_body, ok, route
from shmcam.supervisor.errors import BadRequest, NotFound
from shmcam.supervisor.logs import text_line

from . import settings as cluster_settings
from .cluster import Cluster
from .keeper import Keeper
from .view import NodeState

DOWN_LOAD = 1000  # CamServer's load of a server that is down


def blueprint(cluster: Cluster, keeper: Keeper, tables) -> Blueprint:
    """`tables`: the node table and permanent table as set and persisted (daemon.py)."""
    proxy = Blueprint("proxy", __name__, url_prefix="/api/v1/proxy")

    def nodes() -> list[NodeState]:
        with cluster.view.lock:
            return list(cluster.view.nodes.values())

    def node(index_or_name: str) -> NodeState:
        states = nodes()
        if index_or_name.isdigit() and int(index_or_name) < len(states):
            return states[int(index_or_name)]
        for state in states:
            stripped = state.rule.url.replace("http", "").replace("/", "").replace(":", "")
            if index_or_name in (state.name, stripped):
                return state
        raise NotFound(f"no server {index_or_name!r}: use its index, its name or its url")

    def load(state: NodeState) -> int:
        if not state.usable:
            return DOWN_LOAD
        return sum(len(state.instances(kind)) for kind in ("camera", "pipeline"))

    def servers_table() -> dict:
        table = {}
        for state in nodes():
            figures = state.load
            table[state.rule.url] = {
                "name": state.name,
                "up": state.up,
                "load": load(state),
                "instances": [i for k in ("camera", "pipeline") for i in state.instances(k)],
                "version": state.snapshot.get("version") if state.up else None,
                **{k: figures.get(k) for k in ("cpu", "memory", "tx", "rx")},
            }
        return table

    def info() -> dict:
        instances = {}
        for kind in ("camera", "pipeline"):
            for instance_id, (state, details) in cluster.view.instances(kind).items():
                instances[instance_id] = {**details, "host": state.rule.url, "node": state.name}
        return {"active_instances": instances, "servers": servers_table()}

    @route(proxy, "/servers", "GET", READ)
    def servers():
        table = servers_table()
        columns = ("load", "instances", "version", "cpu", "memory", "tx", "rx")
        return ok(servers=list(table), **{c: [s[c] for s in table.values()] for c in columns})

    @route(proxy, "/status", "GET", READ)
    def status():
        return ok(
            servers={
                s.rule.url: (
                    {i: d for k in ("camera", "pipeline") for i, d in s.instances(k).items()}
                    if s.usable
                    else None
                )
                for s in nodes()
            }
        )

    @route(proxy, "/info", "GET", READ)
    def proxy_info():
        return ok(info=info())

    @route(proxy, "/info/<path:path>", "GET", READ)
    def proxy_info_path(path):
        return ok(path=path, ret=lookup(info(), path))

    @route(proxy, "/version", "GET", READ)
    def version():
        return ok(version=shmcam.__version__)

    @route(proxy, "/heartbeat", "GET", READ)
    def heartbeat():
        return ok(version=shmcam.__version__)

    def stop_anywhere(instance: str, forget: bool) -> None:
        stopped = False
        for kind in ("pipeline", "camera"):
            try:
                cluster.stop(kind, instance, forget)
                stopped = True
            except NotFound:
                pass
        if not stopped:
            raise NotFound(f"no instance {instance!r} running in the cluster")

    @route(proxy, "/<instance>", "DELETE", CHANGE)
    def stop(instance):
        stop_anywhere(instance, False)
        return ok(f"instance {instance} stopped")

    @route(proxy, "/<instance>/del", "DELETE", CHANGE)
    def forget(instance):
        stop_anywhere(instance, True)
        return ok(f"instance {instance} stopped and removed")

    @route(proxy, "/server/<index_or_name>", "DELETE", CHANGE)
    def stop_server(index_or_name):
        state = node(index_or_name)
        for root in ("pipeline", "cam"):
            state.client.call("DELETE", f"/api/v1/{root}")
        return ok(f"every instance on {state.name} stopped")

    def text(entries: list) -> Response:
        return Response("\n".join(map(text_line, entries)), mimetype="text/plain")

    def server_logs(index_or_name) -> list:
        return node(index_or_name).client.get("/api/v1/logs")["logs"]

    def instance_logs(index_or_name, instance) -> list:
        return node(index_or_name).client.get(f"/api/v1/logs/instance/{instance}")["logs"]

    @route(proxy, "/server/logs/<index_or_name>", "GET", READ)
    def logs(index_or_name):
        return ok(logs=server_logs(index_or_name))

    @route(proxy, "/server/logs/<index_or_name>/txt", "GET", READ)
    def logs_txt(index_or_name):
        return text(server_logs(index_or_name))

    @route(proxy, "/server/instance/logs/<index_or_name>/<instance>", "GET", READ)
    def logs_of_instance(index_or_name, instance):
        return ok(logs=instance_logs(index_or_name, instance))

    @route(proxy, "/server/instance/logs/<index_or_name>/<instance>/txt", "GET", READ)
    def logs_of_instance_txt(index_or_name, instance):
        return text(instance_logs(index_or_name, instance))

    @route(proxy, "/config", "GET", READ)
    def config():
        return ok(config=servers_json(tables.rules()))

    @route(proxy, "/config", "POST", CHANGE, CONFIG)
    def config_set():
        rules = rules_from_servers_json(config_body())
        tables.set_rules(rules)
        return ok("servers set", config=servers_json(rules))

    @route(proxy, "/permanent", "GET", READ)
    def permanent():
        return ok(permanent_instances=dict(cluster.permanent))

    @route(proxy, "/permanent", "POST", CHANGE, CONFIG)
    def permanent_set():
        table = tables.set_permanent(config_body())
        return ok("permanent instances set", permanent_instances=table)

    @route(proxy, "/config_names", "GET", READ)
    def config_names():
        return ok(config_names=cluster.pipeline_names())

    @route(proxy, "/<name>/config", "GET", READ)
    def named_config(name):
        return ok(config=cluster.pipeline_config(name))

    @route(proxy, "/<name>/config", "POST", CHANGE, CONFIG)
    def named_config_set(name):
        config = config_body()
        validation.pipeline(config, cluster.camera_names())  # CamServer saved it unchecked
        cluster.save_pipeline_config(name, config)
        return ok(f"pipeline config {name} saved", config=config)

    @route(proxy, "/<name>/config", "DELETE", CHANGE)
    def named_config_delete(name):
        cluster.delete_pipeline_config(name)
        return ok(f"pipeline config {name} deleted")

    @route(proxy, "/diag/<name>", "GET", READ)
    def diag(name):
        return ok(diag=diagnose(cluster, name))

    @route(proxy, "/diag/<name>/<path:path>", "GET", READ)
    def diag_path(name, path):
        return ok(path=path, ret=lookup(diagnose(cluster, name), path))

    return proxy


def lookup(document, path: str):
    """CamServer's nested lookup: keys, integer indices, `_keys`, `_values`, `_split_<sep>`."""
    value = document
    for token in path.strip("/").split("/"):
        if token == "_keys" and isinstance(value, dict):
            value = list(value)
        elif token == "_values" and isinstance(value, dict):
            value = list(value.values())
        elif token.startswith("_split_") and isinstance(value, str):
            value = value.split(token[len("_split_") :])
        elif isinstance(value, dict) and token in value:
            value = value[token]
        elif (
            isinstance(value, list)
            and token.lstrip("-").isdigit()
            and -len(value) <= int(token) < len(value)
        ):
            value = value[int(token)]
        else:
            raise NotFound(f"nothing at {token!r} of {path!r}")
    return value


def diagnose(cluster: Cluster, name: str) -> dict:
    """CamServer's diag: active (running, frames coming), inactive (configured, not running)
    or invalid (no such config); `camera:<name>` adds up that camera's pipelines."""
    if name.startswith("camera:"):
        camera = name.removeprefix("camera:")
        found = [
            info
            for _, (_, info) in cluster.view.instances("pipeline").items()
            if info.get("camera_name") == camera
        ]
        base = diagnose(cluster, camera)
        base["pipelines"] = len(found)
        return base
    for kind in ("pipeline", "camera"):
        running = cluster.view.info(kind, name)
        if running is None:
            continue
        _, info = running
        stats = info.get("statistics", {})
        rx = _hz(stats.get("rx"))
        clients = stats.get("stream_clients") or 0
        forwards = stats.get("forwards") or 0
        mode = (info.get("config") or {}).get("mode", "PUB")
        permanent = name in cluster.permanent
        if kind == "camera":
            databuffer = "active" if forwards else "inactive"
        else:
            databuffer = "active" if permanent and mode == "PUSH" and clients > 4 else "inactive"
        return {
            "status": "active" if rx > 0 else "inactive",
            "clients": clients,
            "forwards": forwards,
            "rx": rx,
            "tx": _hz(stats.get("tx")),
            "cpu": stats.get("cpu"),
            "memory": stats.get("memory"),
            "header_changes": stats.get("header_changes"),
            "frame_shape": stats.get("frame_shape"),
            "mode": mode,
            "permanent": permanent,
            "databuffer": databuffer,
        }
    known = name in cluster.pipeline_names() or name in cluster.camera_names()
    return {"status": "inactive" if known else "invalid", "permanent": name in cluster.permanent}


def _hz(value) -> float:
    """The rate of CamServer's "<Hz>Hz - <count>" statistics."""
    try:
        rate = float(str(value).split("Hz")[0])
    except ValueError:
        return 0.0
    return rate if math.isfinite(rate) else 0.0


def servers_json(rules) -> dict:
    """The node table in CamServer's servers.json shape (plus shmcam's name, groups, speed)."""
    return {
        rule.url: {
            "name": rule.name,
            "enabled": rule.enabled,
            "expanding": rule.expanding,
            "instances": list(rule.instances),
            "cameras": list(rule.cameras),
            "groups": list(rule.groups),
            "network_gbps": rule.network_gbps,
        }
        for rule in rules
    }


def rules_from_servers_json(table: dict):
    """CamServer's servers.json (keyed by URL; a node's name defaults to its host)."""
    rules = []
    for url, entry in table.items():
        if not isinstance(entry, dict):
            raise BadRequest(f"servers: {url!r} must map to an object")
        entry = dict(entry)
        name = entry.pop("name", None) or _name_of(url)
        try:
            rules.append(cluster_settings.node_rule(name, {**entry, "url": url}, f"servers {url}"))
        except cluster_settings.SettingsError as error:
            raise BadRequest(str(error)) from None
    if len({r.name for r in rules}) != len(rules):
        raise BadRequest("servers: two servers have the same name")
    return tuple(rules)


def _name_of(url: str) -> str:
    host = url.split("://", 1)[-1].rstrip("/")
    return host.replace(":", "-").replace(".", "-")
