"""The URL maps of a node's app and of the coordinator's, built in the test process to list
their routes and each view's declared permission and body limit (never to serve)."""

from __future__ import annotations

from shmcam.coordinator import proxy
from shmcam.supervisor.api import api_blueprints, create_app, node_app, web
from shmcam.supervisor.api.common import Auth

TOKEN = "s3cret-token"
LIMITS = {"config": 1, "upload": 1}


class RouteListing:
    """Only what the apps touch while they register routes: a backend stand-in whose
    methods are never called here."""

    name = "listing"

    def camera_image(self, name):
        raise AssertionError("not called")

    pipeline_image = camera_image


def node_routes():
    return node_app(RouteListing(), Auth(TOKEN), LIMITS)


def coordinator_routes():
    backend = RouteListing()
    blueprints = [
        *api_blueprints(backend, Auth(TOKEN)),
        proxy.blueprint(backend, None, None),
        web.blueprint("cluster", Auth(TOKEN), cluster=True),
    ]
    return create_app(Auth(TOKEN), LIMITS, blueprints)


def rows(app) -> set[tuple[str, str, str, str]]:
    """(rule, method, permission, body limit) of every route but static files."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.endswith("static"):
            continue
        view = app.view_functions[rule.endpoint]
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            found.add((rule.rule, method, view.permission, view.body_limit))
    return found
