"""`shmcam coordinator`: one CamServer-compatible front for many nodes (placement, the cluster's
config store, permanent instances kept running when a node dies, CamServer's /api/v1/proxy)."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

from shmcam.supervisor import server as rest_server
from shmcam.supervisor.api import CONFIG, UPLOAD, Auth, api_blueprints, create_app, web
from shmcam.supervisor.logs import LogRing
from shmcam.supervisor.store import ConfigStore

from . import proxy
from . import settings as cluster_settings
from .cluster import Cluster
from .keeper import Keeper
from .tables import Tables
from .view import ClusterView

log = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 1 << 20
MAX_UPLOAD_BYTES = 128 << 20
FIRST_VIEW_TIMEOUT = 2.0  # a restarted coordinator knows the cluster within this


def add_parser(commands) -> None:
    p = commands.add_parser(
        "coordinator",
        help="run the cluster coordinator (one front for many nodes)",
        description=__doc__,
    )
    p.add_argument(
        "--config",
        type=Path,
        default=cluster_settings.DEFAULT_CONFIG,
        help=f"cluster config TOML (default {cluster_settings.DEFAULT_CONFIG})",
    )
    p.add_argument("--host", help="REST bind address (overrides host)")
    p.add_argument("--port", type=int, help="REST port, 0 for any free one (overrides port)")
    p.add_argument("--data-dir", type=Path, help="the cluster's config store (overrides)")
    p.set_defaults(run=run)


def run(args) -> int:
    try:
        settings = cluster_settings.load(
            args.config, host=args.host, port=args.port, data_dir=args.data_dir
        )
        token = cluster_settings.read_token(settings.token_file, "token_file")
        node_token = cluster_settings.read_token(settings.node_token_file, "node_token_file")
    except cluster_settings.SettingsError as error:
        raise SystemExit(f"shmcam coordinator: {error}") from None
    log_ring = LogRing()
    logging.getLogger().addHandler(log_ring)
    if token is None:
        log.warning(
            "the coordinator has no token: anyone who reaches it may change the cluster. Set "
            "token_file in cluster.toml (see the README)"
        )
    store = ConfigStore(settings.data_dir, max_config_bytes=MAX_CONFIG_BYTES)
    tables = Tables(settings, store)
    keeper_ref: list[Keeper] = []
    view = ClusterView(
        tables.rules(),
        node_token,
        settings.poll_interval,
        settings.node_timeout,
        on_change=lambda: keeper_ref and keeper_ref[0].wake(),
    )
    cluster = Cluster(store, view, log_ring)
    cluster.permanent = dict(tables.permanent)
    keeper = Keeper(cluster, settings.poll_interval)
    keeper_ref.append(keeper)
    tables.view, tables.keeper = view, keeper
    auth = Auth(token)
    limits = {CONFIG: MAX_CONFIG_BYTES, UPLOAD: MAX_UPLOAD_BYTES}
    app = create_app(
        auth,
        limits,
        [
            *api_blueprints(cluster, auth),
            proxy.blueprint(cluster, keeper, tables),
            web.blueprint("cluster", auth, cluster=True),
        ],
    )
    server = rest_server.create(
        app, settings.host, settings.port, settings.rest_threads, MAX_UPLOAD_BYTES
    )

    def terminate(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    started = time.monotonic()
    view.wait_first_round(FIRST_VIEW_TIMEOUT)
    log.info(
        "cluster view of %d nodes in %.2f s (%d up)",
        len(tables.rules()),
        time.monotonic() - started,
        len(view.usable()),
    )
    keeper.start()
    keeper.wake()
    try:
        log.info("coordinator: REST API on http://%s:%s", settings.host, server.effective_port)
        print(f"listening on http://{settings.host}:{server.effective_port}", flush=True)
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        keeper.stop()
        view.stop()
        server.close()
    return 0
