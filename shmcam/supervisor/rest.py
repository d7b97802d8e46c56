"""The CamServer-compatible REST API of a node (docs/spec/rest-api.md), as a Flask app.

Every answer carries CamServer's envelope {"state", "status", ...}; errors also get the proper
HTTP status. Mutating calls need the bearer token when one is configured. Uploaded arrays are
never unpickled except through the restricted loader in arrays.py.
"""

from __future__ import annotations

import hmac
import json
import logging
import time

import numpy as np
import psutil
from flask import Blueprint, Flask, Response, jsonify, request

import shmcam
from shmcam.processing import functions
from shmcam.shm import RingReader, ring_base

from . import arrays, metrics, png, validation, web
from .errors import BadRequest, Conflict, NotFound
from .logs import LogRing
from .manager import Manager
from .store import check_file_name

log = logging.getLogger(__name__)

FRAME_TIMEOUT = 5.0
PREVIEW_TIMEOUT = 2.0  # a pipeline previews its image several times a second
MAX_BACKGROUND_IMAGES = 1000


class Unauthorized(Exception):
    """A mutating call without the node's bearer token (HTTP 401). Not PermissionError: an
    OS permission error of the store is a fault of the node, not of the client's token."""


def ok(status: str = "ok", **keys) -> Response:
    return jsonify({"state": "ok", "status": status, **keys})


def body() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def create_app(manager: Manager, log_ring: LogRing, token: str | None = None) -> Flask:
    app = Flask("shmcam")
    app.json.sort_keys = False
    store = manager.store
    node = manager.settings.node

    @app.errorhandler(NotFound)
    @app.errorhandler(BadRequest)
    @app.errorhandler(Conflict)
    @app.errorhandler(Unauthorized)
    def known_error(error):
        code = {NotFound: 404, BadRequest: 400, Conflict: 409, Unauthorized: 401}[type(error)]
        headers = {"WWW-Authenticate": "Bearer"} if code == 401 else {}
        return jsonify({"state": "error", "status": str(error)}), code, headers

    @app.errorhandler(404)
    @app.errorhandler(405)
    def http_error(error):
        return jsonify({"state": "error", "status": f"{error.name}: {request.path}"}), error.code

    @app.errorhandler(Exception)
    def fault(error):
        log.exception("%s %s failed", request.method, request.path)
        return jsonify({"state": "error", "status": f"internal error: {error}"}), 500

    @app.before_request
    def authorize():
        if token and request.method in ("POST", "PUT", "DELETE"):
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                raise Unauthorized(
                    "this call changes the node: it needs the header "
                    "'Authorization: Bearer <token>' of the node's token_file"
                )

    # --- shared by both roots -----------------------------------------------------------------
    def server_info(kind: str) -> dict:
        net = psutil.net_io_counters()
        return {
            "version": shmcam.__version__,
            "active_instances": {i: inst.info() for i, inst in manager.instances(kind).items()},
            "cpu": psutil.cpu_percent(),
            "memory": psutil.virtual_memory().percent,
            "tx": net.bytes_sent,
            "rx": net.bytes_recv,
        }

    def add_common(bp: Blueprint, kind: str) -> None:
        bp.add_url_rule("/info", "server_info", lambda: ok(info=server_info(kind)))
        bp.add_url_rule("/version", "version", lambda: ok(version=shmcam.__version__))
        bp.add_url_rule(
            "/heartbeat",
            "heartbeat",
            lambda: ok(
                version=shmcam.__version__,
                statistics={i: inst.statistics() for i, inst in manager.instances(kind).items()},
            ),
        )

        def stop_all():
            manager.stop_all(kind)
            return ok(f"all {kind} instances stopped")

        def stop(instance_id):
            manager.stop(kind, instance_id)
            return ok(f"{kind} instance {instance_id} stopped")

        def forget(instance_id):
            manager.stop(kind, instance_id, forget=True)
            return ok(f"{kind} instance {instance_id} stopped and removed")

        bp.add_url_rule("", "stop_all", stop_all, methods=["DELETE"])
        bp.add_url_rule("/<instance_id>", "stop", stop, methods=["DELETE"])
        bp.add_url_rule("/<instance_id>/del", "forget", forget, methods=["DELETE"])

    def file_routes(bp: Blueprint, kind: str, collection: str, store_kind: str = "") -> None:
        """GET list; GET/PUT/DELETE one (scripts and libs), kept in the store's `store_kind`."""
        store_kind = store_kind or kind
        bp.add_url_rule(
            f"/{kind}", f"{kind}_names", lambda: ok(**{collection: store.file_names(store_kind)})
        )

        def one(name):
            if request.method == "GET":
                return ok(**{kind: store.get_file(store_kind, name).decode("utf-8", "replace")})
            if request.method == "PUT":
                data = request.get_data()
                if store_kind == "script":
                    check_user_function(name, data)
                store.save_file(store_kind, name, data)
                return ok(f"{kind} {name} saved")
            store.delete_file(store_kind, name)
            return ok(f"{kind} {name} deleted")

        bp.add_url_rule(
            f"/{kind}/<name>/{kind}_bytes", f"{kind}_bytes", one, methods=["GET", "PUT", "DELETE"]
        )

    def check_user_function(name: str, data: bytes) -> None:
        """An uploaded user function must load (a C source compile) before it is stored."""
        try:
            functions.check(check_file_name(name), data, store.data_dir / "scripts")
        except ValueError as error:
            raise BadRequest(f"{error}; nothing was stored") from None

    def no_frame(source: str, timeout: float) -> Conflict:
        return Conflict(f"{source} delivered no image within {timeout:g} s")

    def open_ring(base: str, source: str, timeout: float = FRAME_TIMEOUT) -> RingReader:
        try:
            return RingReader(base, timeout=timeout)
        except FileNotFoundError:
            raise no_frame(source, timeout) from None

    def open_camera_ring(camera: str) -> RingReader:
        """A reader of the camera's ring (the camera is started if needed; it creates its
        ring with its first frame)."""
        manager.camera(camera)
        return open_ring(ring_base(node, camera), f"camera {camera}")

    def grab(
        reader: RingReader, newest: bool, source: str, timeout: float = FRAME_TIMEOUT
    ) -> np.ndarray:
        """A copy of the newest frame (newest=True) or of the next frame not handed out yet."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = (newest and reader.latest()) or reader.wait(0.5)
            if frame is not None:
                image = frame.image.copy()
                if reader.validate(frame):
                    return image
        raise no_frame(source, timeout)

    def latest_frame(camera: str) -> np.ndarray:
        """A copy of the camera's newest frame (the camera is started if needed)."""
        with open_camera_ring(camera) as reader:
            return grab(reader, True, f"camera {camera}")

    def latest_preview(instance_id: str) -> np.ndarray:
        """A copy of a running pipeline's newest preview image. Its camera is not started:
        looking at a pipeline must not bring back what was stopped."""
        if not manager.running_pipeline(instance_id).alive:
            raise Conflict(f"pipeline {instance_id} is not running")
        source = f"pipeline {instance_id} (only a 2-D numeric 'image' in its output is previewed)"
        with open_ring(ring_base(node, instance_id, "preview"), source, PREVIEW_TIMEOUT) as reader:
            return grab(reader, True, source, PREVIEW_TIMEOUT)

    def png_response(image: np.ndarray) -> Response:
        args = request.args
        try:
            factor = _float(args, "scale")
            if factor is not None:
                if not 0 < factor < float("inf"):
                    raise BadRequest(f"scale must be a positive number, got {args['scale']!r}")
                step = max(1, round(1 / factor))  # downscaling only, by whole pixels, first:
                image = image[::step, ::step]  # the 8-bit scaling then touches fewer
            if args.get("raw") is None:
                image8 = png.scale(image, _float(args, "min_value"), _float(args, "max_value"))
            else:
                image8 = np.clip(image, 0, 255).astype(np.uint8)
            data = png.encode(image8, args.get("colormap", "grey"))
        except ValueError as error:
            raise BadRequest(str(error)) from None
        return Response(data, mimetype="image/png")

    def image_routes(bp: Blueprint, path: str, latest) -> None:
        """GET geometry, image (PNG) and image_bytes of the image `latest(name)` returns."""
        bp.add_url_rule(
            f"{path}/geometry", "geometry", lambda name: ok(geometry=list(latest(name).shape[::-1]))
        )
        bp.add_url_rule(f"{path}/image", "image", lambda name: png_response(latest(name)))
        bp.add_url_rule(
            f"{path}/image_bytes",
            "image_bytes",
            lambda name: ok(image=arrays.image_bytes_payload(latest(name))),
        )

    # --- cameras --------------------------------------------------------------------------------
    cam = Blueprint("cam", __name__, url_prefix="/api/v1/cam")
    add_common(cam, "camera")
    file_routes(cam, "script", "scripts", store_kind="camera_script")

    @cam.get("")
    def camera_names():
        return ok(cameras=store.config_names("camera"))

    @cam.get("/aliases")
    def camera_aliases():
        aliases = {}
        for name in store.config_names("camera"):
            alias = _quiet_config(store, "camera", name).get("alias")
            for a in [alias] if isinstance(alias, str) else alias or []:
                aliases[a] = name
        return ok(aliases=aliases)

    @cam.get("/groups")
    def camera_groups():
        return ok(groups=_groups(store, "camera"))

    @cam.get("/<camera>")
    def camera_stream(camera):
        return ok(stream=manager.camera(camera).stream)

    @cam.get("/<camera>/is_online")
    def camera_online(camera):
        config = manager.camera_config(camera)
        instance = manager.instances("camera").get(camera)
        if instance is None:
            return ok(
                f"camera {camera} is not running; it starts on request "
                f"({config.get('source_type', 'simulation')} source)",
                online=True,
            )
        if instance.online is None:
            return ok("connecting to the source", online=False)
        online, reason = instance.online
        arriving = online and instance.counters().get("frames_in", 0) > 0
        return ok("frames arriving" if arriving else reason, online=online)

    @cam.route("/<camera>/config", methods=["GET", "POST", "DELETE"])
    def camera_config(camera):
        if request.method == "GET":
            return ok(config=manager.camera_config(camera))
        if request.method == "POST":
            return ok(
                f"camera {camera} config saved", config=manager.set_camera_config(camera, body())
            )
        store.delete_config("camera", camera)
        return ok(f"camera {camera} config deleted")

    image_routes(cam, "/<name>", latest_frame)

    @cam.put("/background/<name>/image_bytes")
    def camera_background_put(name):
        store.save_background(name, _background(arrays.load_array(request.get_data())))
        return ok(f"background {name} saved")

    # --- pipelines ------------------------------------------------------------------------------
    pipe = Blueprint("pipeline", __name__, url_prefix="/api/v1/pipeline")
    add_common(pipe, "pipeline")
    file_routes(pipe, "script", "scripts")
    file_routes(pipe, "lib", "libs")

    def instance_answer(instance, status="ok"):
        return ok(status, instance_id=instance.id, stream=instance.stream, config=instance.config)

    @pipe.get("")
    def pipeline_names():
        return ok(pipelines=store.config_names("pipeline"))

    @pipe.get("/config_names")
    def pipeline_config_names():
        return ok(config_names=store.config_names("pipeline"))

    @pipe.get("/groups")
    def pipeline_groups():
        return ok(groups=_groups(store, "pipeline"))

    @pipe.get("/camera")
    def pipeline_cameras():
        return ok(cameras=store.config_names("camera"))

    @pipe.post("")
    def pipeline_create():
        instance = manager.create_pipeline(body(), request.args.get("instance_id"))
        return instance_answer(instance, f"instance {instance.id} started")

    @pipe.post("/<name>")
    def pipeline_create_from_name(name):
        config = store.get_config("pipeline", name)
        extra = request.args.get("additional_config")
        if extra:
            try:
                extra = json.loads(extra)
            except ValueError as error:
                raise BadRequest(f"additional_config is not JSON: {error}") from None
            if not isinstance(extra, dict):
                raise BadRequest("additional_config must be a JSON object")
            config = {**config, **extra}
        instance = manager.create_pipeline(config, request.args.get("instance_id"))
        return instance_answer(instance, f"instance {instance.id} started")

    @pipe.get("/instance/<instance_id>")
    def pipeline_shared(instance_id):
        return instance_answer(manager.shared_pipeline(instance_id))

    @pipe.post("/instance/")
    def pipeline_for_config():
        return instance_answer(manager.pipeline_for_config(body()))

    @pipe.get("/instance/<instance_id>/info")
    def pipeline_info(instance_id):
        return ok(info=manager.running_pipeline(instance_id).info())

    image_routes(pipe, "/instance/<name>", latest_preview)

    @pipe.get("/instance/<instance_id>/exitcode")
    def pipeline_exitcode(instance_id):
        instance = manager.running_pipeline(instance_id)
        return ok(
            exitcode=instance.poll(), finished=instance.finished, last_error=instance.last_error
        )

    @pipe.route("/instance/<instance_id>/config", methods=["GET", "POST"])
    def pipeline_instance_config(instance_id):
        if request.method == "GET":
            return ok(config=manager.running_pipeline(instance_id).config)
        return ok(
            f"instance {instance_id} config updated",
            config=manager.update_pipeline(instance_id, body()),
        )

    @pipe.route("/<name>/config", methods=["GET", "POST", "DELETE"])
    def pipeline_config(name):
        if request.method == "GET":
            return ok(config=store.get_config("pipeline", name))
        if request.method == "POST":
            config = body()
            validation.pipeline(config, store.config_names("camera"))
            store.save_config("pipeline", name, config)
            return ok(f"pipeline config {name} saved", config=config)
        store.delete_config("pipeline", name)
        return ok(f"pipeline config {name} deleted")

    @pipe.post("/camera/<camera>/background")
    def background_collect(camera):
        try:
            n_images = int(request.args.get("n_images", 10))
        except ValueError:
            raise BadRequest("n_images must be an integer") from None
        if not 1 <= n_images <= MAX_BACKGROUND_IMAGES:
            raise BadRequest(f"n_images must be between 1 and {MAX_BACKGROUND_IMAGES}")
        with open_camera_ring(camera) as reader:  # n successive frames, each one once
            total = None
            for _ in range(n_images):
                frame = grab(reader, False, f"camera {camera}")
                if total is not None and frame.shape != total.shape:
                    raise Conflict(
                        f"camera {camera} changed its geometry while the background "
                        f"was taken; take it again"
                    )
                total = frame.astype(np.float64) if total is None else total + frame
        background_id = store.new_background_id(camera)
        store.save_background(background_id, total / n_images)
        return ok(f"background of {n_images} images saved", background_id=background_id)

    @pipe.get("/camera/<camera>/background")
    def background_latest(camera):
        return ok(background_id=store.latest_background(camera))

    @pipe.get("/camera/<camera>/backgrounds")
    def background_list(camera):
        return ok(background_ids=store.background_ids(camera))

    @pipe.get("/background/<background_id>/image")
    def background_png(background_id):
        return png_response(store.get_background(background_id))

    @pipe.route("/background/<background_id>/image_bytes", methods=["GET", "PUT"])
    def background_bytes(background_id):
        if request.method == "GET":
            return ok(image=arrays.image_bytes_payload(store.get_background(background_id)))
        store.save_background(background_id, _background(arrays.load_array(request.get_data())))
        return ok(f"background {background_id} saved")

    @pipe.post("/background")
    def background_upload():
        data = body()
        name, values = data.get("filename"), data.get("data")
        if not isinstance(name, str) or not isinstance(values, list):
            raise BadRequest('the body must be {"filename": name, "data": nested list}')
        try:
            array = np.array(values)
        except (TypeError, ValueError) as error:
            raise BadRequest(f"data is not a numeric nested list: {error}") from None
        store.save_background(name, _background(array).astype(np.float64))
        return ok(f"background {name} saved", background_id=name)

    # --- logs -----------------------------------------------------------------------------------
    logs = Blueprint("logs", __name__, url_prefix="/api/v1/logs")

    def instance_logs(instance_id) -> list[str]:
        for kind in ("pipeline", "camera"):
            table = manager.pipelines if kind == "pipeline" else manager.cameras
            if instance_id in table:
                return list(table[instance_id].logs)
        raise NotFound(f"no instance {instance_id!r} on this node")

    @logs.get("")
    def server_logs():
        return ok(logs=list(log_ring.records))

    @logs.get("/txt")
    def server_logs_txt():
        return Response("\n".join(r["text"] for r in log_ring.records), mimetype="text/plain")

    @logs.get("/instance/<instance_id>")
    def logs_of_instance(instance_id):
        return ok(logs=instance_logs(instance_id))

    @logs.get("/instance/<instance_id>/txt")
    def logs_of_instance_txt(instance_id):
        return Response("\n".join(instance_logs(instance_id)), mimetype="text/plain")

    @app.get("/metrics")
    def prometheus_metrics():
        page = metrics.render(
            node, {kind: manager.instances(kind) for kind in ("camera", "pipeline")}
        )
        return Response(page, mimetype="text/plain; version=0.0.4")

    for blueprint in (cam, pipe, logs, web.blueprint(node, bool(token))):
        app.register_blueprint(blueprint)
    return app


def _float(args, key):
    value = args.get(key)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise BadRequest(f"{key} must be a number, got {value!r}") from None


def _background(array: np.ndarray) -> np.ndarray:
    """An uploaded background: a non-empty 2-D image of real numbers, as frames are."""
    if array.dtype.kind not in "biuf":
        raise BadRequest(f"a background must hold real numbers, got dtype {array.dtype.str!r}")
    if array.ndim != 2 or not array.size:
        raise BadRequest(
            f"a background must be a non-empty 2-D image [height, width], "
            f"got shape {list(array.shape)}"
        )
    return array


def _quiet_config(store, kind, name) -> dict:
    try:
        return store.get_config(kind, name)
    except (NotFound, BadRequest):
        return {}


def _groups(store, kind) -> dict:
    groups: dict[str, list[str]] = {}
    for name in store.config_names(kind):
        group = _quiet_config(store, kind, name).get("group")
        if isinstance(group, str):
            groups.setdefault(group, []).append(name)
    return groups
