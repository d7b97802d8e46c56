"""The CamServer-compatible REST API (docs/spec/rest-api.md), as a Flask app: one module per
resource, each route declaring its permission and body limit (common.py).

Every answer carries CamServer's envelope {"state", "status", ...}; errors also get the proper
HTTP status. The routes call only the node facade (node.py), so the coordinator can serve them
over a cluster.
"""

from __future__ import annotations

import logging
import math

from flask import Blueprint, Flask, Response, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from ..errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    StorageError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from . import backgrounds, cameras, files, instances, logs, pipelines, status, web
from .common import CONFIG, NO_BODY, READ, UPLOAD, Auth, route

log = logging.getLogger(__name__)

STATUS = {
    NotFound: 404,
    BadRequest: 400,
    Conflict: 409,
    Unauthorized: 401,
    Forbidden: 403,
    TooLarge: 413,
    Unavailable: 503,
    StorageError: 500,
}
NO_BODY_BYTES = 64 * 1024


class StrictJSON(DefaultJSONProvider):
    """Strict JSON out: a NaN or infinity anywhere (a statistic of a frame that had none)
    becomes null, so strict parsers (browsers, Java) can read every answer."""

    sort_keys = False

    def dumps(self, obj, **kwargs):
        kwargs.setdefault("allow_nan", False)
        try:
            return super().dumps(obj, **kwargs)
        except ValueError:
            return super().dumps(_finite(obj), **kwargs)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def error(status: str, code: int, headers: dict | None = None):
    return jsonify({"state": "error", "status": status}), code, headers or {}


def node_app(node, auth: Auth, limits: dict[str, int]) -> Flask:
    """A node's app: the CamServer API, the coordinator's status routes, the status page."""
    blueprints = [
        *api_blueprints(node, auth),
        status.blueprint(node),
        web.blueprint(node.name, auth),
    ]
    return create_app(auth, limits, blueprints)


def api_blueprints(backend, auth: Auth) -> list[Blueprint]:
    """The routes a node and the coordinator both serve (`/api/v1/cam`, `/api/v1/pipeline`,
    `/api/v1/logs`, `/metrics`), over a backend: the node facade or the cluster's."""
    cam = Blueprint("cam", __name__, url_prefix="/api/v1/cam")
    pipe = Blueprint("pipeline", __name__, url_prefix="/api/v1/pipeline")
    for bp, kind in ((cam, "camera"), (pipe, "pipeline")):
        instances.add(bp, kind, backend)
    cameras.add(cam, backend)
    pipelines.add(pipe, backend, auth)
    backgrounds.add(cam, pipe, backend)
    files.add(cam, "script", "scripts", "camera_script", backend, auth)
    files.add(pipe, "script", "scripts", "script", backend, auth)
    files.add(pipe, "lib", "libs", "lib", backend, auth)
    files.add(pipe, "program", "programs", "program", backend, auth)
    root = Blueprint("root", __name__)

    @route(root, "/metrics", "GET", READ)
    def prometheus_metrics():
        return Response(backend.metrics(), mimetype="text/plain; version=0.0.4")

    @route(root, "/base", "GET", READ)
    def base():
        return jsonify({"state": "ok", "status": "ok", "base": "/api/v1"})

    return [cam, pipe, logs.blueprint(backend), root]


def create_app(auth: Auth, limits: dict[str, int], blueprints: list[Blueprint]) -> Flask:
    """The app: envelope, errors, authorisation by declared permission, body limits, CORS.
    `limits`: bytes of request body per limit name (common.CONFIG, common.UPLOAD)."""
    limits = {NO_BODY: NO_BODY_BYTES, **limits}
    app = Flask("shmcam")
    app.json = StrictJSON(app)

    @app.errorhandler(Exception)
    def failed(exception):
        for kind, code in STATUS.items():
            if isinstance(exception, kind):
                headers = {"WWW-Authenticate": "Bearer"} if code == 401 else {}
                if code == 503:
                    headers["Retry-After"] = "1"
                if code == 500:
                    log.error("%s %s: %s", request.method, request.path, exception)
                return error(str(exception), code, headers)
        if isinstance(exception, HTTPException):
            return error(f"{exception.name}: {request.path}", exception.code)
        if isinstance(exception, RecursionError):
            return error("the request is nested too deeply", 400)
        log.exception("%s %s failed", request.method, request.path)
        return error(f"internal error: {exception}", 500)

    @app.before_request
    def authorize():
        if request.method == "OPTIONS":
            return None  # answered by Flask itself: it never reaches a view
        view = app.view_functions.get(request.endpoint)
        if view is None:
            return None  # 404 or 405 follow
        auth.check(getattr(view, "permission", READ if _static(request.endpoint) else "change"))
        limit = limits[getattr(view, "body_limit", NO_BODY)]
        if request.content_length is not None and request.content_length > limit:
            raise TooLarge(
                f"the request body has {request.content_length} bytes; this route takes at "
                f"most {limit} (see the node's max_upload_mb and max_config_kb)"
            )
        request.max_content_length = limit
        return None

    @app.after_request
    def cors(response: Response) -> Response:
        """Browser viewers of other origins may read (CamServer answers CORS * too); the
        token guards what changes, and browsers send no credentials across origins."""
        response.headers.setdefault("Access-Control-Allow-Origin", "*")
        response.headers.setdefault("Access-Control-Allow-Headers", "Authorization, Content-Type")
        response.headers.setdefault("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE")
        return response

    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    _check_permissions(app)
    return app


def _static(endpoint: str) -> bool:
    return endpoint == "static" or endpoint.endswith(".static")


def _check_permissions(app: Flask) -> None:
    """Every route declares what it does: refuse to build an app with one that does not."""
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if not _static(rule.endpoint) and not hasattr(view, "permission"):
            raise AssertionError(f"route {rule} ({rule.endpoint}) declares no permission")
        if "OPTIONS" in (rule.methods or ()) and not rule.provide_automatic_options:
            raise AssertionError(f"route {rule} handles OPTIONS itself")


__all__ = ["Auth", "CONFIG", "UPLOAD", "api_blueprints", "create_app", "node_app"]
