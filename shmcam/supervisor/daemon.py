"""`shmcam supervisor`: the node daemon (REST API, instances, rings)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

from shmcam.shm import remove_stale

from . import server as rest_server
from . import settings as node_settings
from .api import CONFIG, UPLOAD, Auth, node_app
from .frames import Frames
from .hub import Hub
from .logs import LogRing
from .manager import Manager
from .node import Node
from .permanent import Permanent
from .store import ConfigStore
from .succession import NodeBusy, NodeLock, PidFiles
from .watchdog import Watchdog

log = logging.getLogger(__name__)


def add_parser(commands) -> None:
    p = commands.add_parser(
        "supervisor", help="run the node supervisor (REST API, instances)", description=__doc__
    )
    p.add_argument(
        "--config",
        type=Path,
        default=node_settings.DEFAULT_CONFIG,
        help=f"node config TOML (default {node_settings.DEFAULT_CONFIG})",
    )
    p.add_argument("--data-dir", type=Path, help="data directory (overrides the config)")
    p.add_argument(
        "--config-dir",
        type=Path,
        help="directory of shipped cameras/ and pipelines/ TOML (overrides)",
    )
    p.add_argument("--host", help="REST bind address (overrides rest_host)")
    p.add_argument("--port", type=int, help="REST port, 0 for any free one (overrides rest_port)")
    p.add_argument("--node", help="node name (overrides)")
    p.add_argument("--public-host", help="host name put in stream addresses (overrides)")
    p.add_argument("--run-dir", type=Path, help="run directory (overrides run_dir)")
    p.set_defaults(run=run)


def run(args) -> int:
    try:
        settings = node_settings.load(
            args.config,
            data_dir=args.data_dir,
            config_dir=args.config_dir,
            rest_host=args.host,
            rest_port=args.port,
            node=args.node,
            public_host=args.public_host,
            run_dir=args.run_dir,
        )
        token = node_settings.read_token(settings)
    except node_settings.SettingsError as error:
        raise SystemExit(f"shmcam supervisor: {error}") from None
    lock = NodeLock(settings.node)
    try:
        lock.acquire()
    except NodeBusy as error:
        raise SystemExit(f"shmcam supervisor: {error}") from None
    try:
        return _serve(settings, token)
    finally:
        lock.release()


def _serve(settings: node_settings.Settings, token: str | None) -> int:
    log_ring = LogRing()
    logging.getLogger().addHandler(log_ring)
    pids = PidFiles(settings.run_dir, settings.node)
    ended = pids.end_predecessors()
    if ended:
        log.warning("ended %d instances a previous supervisor left: %s", len(ended), ended)
    removed = remove_stale(f"shmcam.{settings.node}.")
    if removed:
        log.warning("removed %d stale shared-memory segments of a previous run", len(removed))
    if token is None:
        log.warning(
            "node %s has no token: anyone who reaches http://%s:%s may change it%s. Set "
            "token_file in its shmcam.toml to a file holding a secret (see the README)",
            settings.node,
            settings.rest_host,
            settings.rest_port,
            ""
            if not settings.allow_anonymous_code
            else ", and make it run code (allow_anonymous_code = true)",
        )
    store = ConfigStore(
        settings.data_dir, settings.config_dir, max_config_bytes=settings.max_config_bytes
    )
    hub = Hub()
    manager = Manager(settings, store, hub, pids)
    frames = Frames(manager, slots=max(1, settings.rest_threads // 4))
    permanent = Permanent(manager)
    node = Node(manager, frames, log_ring, permanent)
    limits = {CONFIG: settings.max_config_bytes, UPLOAD: settings.max_upload_bytes}
    app = node_app(node, Auth(token, settings.allow_anonymous_code), limits)
    server = rest_server.create(
        app,
        settings.rest_host,
        settings.rest_port,
        settings.rest_threads,
        max(limits.values()),
    )

    def terminate(signum, frame):
        raise SystemExit(0)  # ends waitress's loop; cleanup follows below

    signal.signal(signal.SIGTERM, terminate)
    try:
        permanent.start_all()
        Watchdog(manager, settings.stuck_timeout).start()
        log.info(
            "node %s: REST API on http://%s:%s, data in %s",
            settings.node,
            settings.rest_host,
            server.effective_port,
            settings.data_dir,
        )
        print(f"listening on http://{settings.rest_host}:{server.effective_port}", flush=True)
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        log.info("stopping every instance")
        manager.shutdown()
        server.close()
        hub.close()
        remove_stale(f"shmcam.{settings.node}.")
    return 0
