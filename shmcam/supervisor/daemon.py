"""`shmcam supervisor`: the node daemon (REST API, instances, rings)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import waitress

from shmcam.shm import remove_all

from . import settings as node_settings
from .logs import LogRing
from .manager import Manager
from .rest import create_app
from .store import ConfigStore

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
        )
        token = node_settings.read_token(settings)
    except node_settings.SettingsError as error:
        raise SystemExit(f"shmcam supervisor: {error}") from None
    removed = remove_all(f"shmcam.{settings.node}.")
    if removed:
        log.warning("removed %d stale shared-memory segments of a previous run", len(removed))
    log_ring = LogRing()
    logging.getLogger().addHandler(log_ring)
    manager = Manager(settings, ConfigStore(settings.data_dir, settings.config_dir))
    server = waitress.create_server(
        create_app(manager, log_ring, token),
        host=settings.rest_host,
        port=settings.rest_port,
        threads=8,
    )

    def terminate(signum, frame):
        raise SystemExit(0)  # ends waitress's loop; cleanup follows below

    signal.signal(signal.SIGTERM, terminate)
    try:
        manager.start()
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
        remove_all(f"shmcam.{settings.node}.")
    return 0
