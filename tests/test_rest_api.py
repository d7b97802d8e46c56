"""The REST API (docs/spec/rest-api.md) as a client sees it: a real supervisor, real instances,
real bsread streams. Every endpoint's success and error paths; an error must change nothing."""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import pickle
import re
import shlex
import struct
import uuid
import zlib
from datetime import datetime

import numpy as np
import requests
from supervisor_harness import SIM_CAMERA, counted, receive, wait_for

import shmcam
from shmcam.bsread import Receiver
from shmcam.sources.simulation import beam_frames
from shmcam.supervisor.validation import expanded_camera, expanded_pipeline

CAM = {**SIM_CAMERA, "no_client_timeout": 0}  # never stopped for idleness mid-test
PIPE = {"camera_name": "sim", "no_client_timeout": 0}
FRAMES = beam_frames(320, 240, "uint16", count=16)  # what the simulation camera sends
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
C_FUNCTION = b"""PyObject *process_image(PyArrayObject *image, uint64_t pulse_id, double timestamp,
                        PyArrayObject *x_axis, PyArrayObject *y_axis,
                        PyObject *parameters, PyObject *bsdata)
{
    return PyDict_New();
}
"""  # a C user function must compile to be stored (docs/user-functions.md)
LOGGING_SCRIPT = b"""import logging
from shmcam.processing.minimal import process_image
logging.getLogger("user").warning("user script loaded")
"""


# --- helpers -----------------------------------------------------------------------------------


def get(sup, path, **kwargs) -> requests.Response:
    """A raw GET, for answers that are not JSON (PNG, text)."""
    return requests.get(sup.url + path, timeout=60, **kwargs)


def receive_nothing(stream, timeout=0.5) -> bool:
    """True if nothing arrives on the stream (its instance is gone)."""
    with Receiver(stream, timeout=timeout) as receiver:
        return receiver.receive() is None


def port_of(stream: str) -> int:
    match = re.fullmatch(r"tcp://127\.0\.0\.1:(\d+)", stream)
    assert match, stream
    return int(match.group(1))


def camera_ports(sup) -> range:
    return range(sup.rest_port + 1, sup.rest_port + 9)


def pipeline_ports(sup) -> range:
    return range(sup.rest_port + 9, sup.rest_port + 24)


def png_pixels(data: bytes) -> np.ndarray:
    """The pixels of one of our PNGs (8-bit grey or RGB, one IDAT, filter "none"),
    [height, width] or [height, width, 3]; the signature and IHDR are checked on the way."""
    assert data[:8] == PNG_SIGNATURE, data[:16]
    assert data[12:16] == b"IHDR"
    width, height, depth, color_type = struct.unpack(">IIBB", data[16:26])
    assert depth == 8 and color_type in (0, 2)
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    rows = np.frombuffer(zlib.decompress(data[idat + 4 : idat + 4 + length]), np.uint8)
    rows = rows.reshape(height, -1)
    assert not rows[:, 0].any()
    shape = (height, width) if color_type == 0 else (height, width, 3)
    return rows[:, 1:].reshape(shape)


def png_info(data: bytes) -> tuple[int, int, int]:
    """(width, height, color type) from the IHDR of a PNG that decodes to that many pixels."""
    pixels = png_pixels(data)
    return pixels.shape[1], pixels.shape[0], 0 if pixels.ndim == 2 else 2


def decode(payload: dict) -> np.ndarray:
    """An image_bytes payload as an array, every field checked against the bytes."""
    raw = base64.b64decode(payload["bytes"], validate=True)
    array = np.frombuffer(raw, dtype=payload["dtype"])
    assert array.size == np.prod(payload["shape"])
    return array.reshape(payload["shape"])


def is_simulated_frame(image: np.ndarray) -> bool:
    return any(np.array_equal(image, frame) for frame in FRAMES)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def tree(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def active(sup, kind: str) -> dict:
    root = "cam" if kind == "camera" else "pipeline"
    return sup.call("GET", f"/api/v1/{root}/info")["info"]["active_instances"]


def instance_config(sup, instance_id: str) -> dict:
    return sup.call("GET", f"/api/v1/pipeline/instance/{instance_id}/config")["config"]


def channels_after_update(stream: str, expected: set, tries: int = 50) -> list[set]:
    """Channel sets of 3 messages once the first with `expected` arrived (updates apply from
    the next frame, so messages already under way may still have the old channels)."""
    with Receiver(stream, timeout=5) as receiver:
        for _ in range(tries):
            message = receiver.receive()
            assert message is not None, f"stream {stream} went silent"
            if set(message.data) == expected:
                return [set(receiver.receive().data) for _ in range(3)]
    raise AssertionError(f"no message with channels {expected} in {tries}")


# --- common surface ----------------------------------------------------------------------------


def test_unknown_routes_methods_and_names_answer_error_envelopes(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    missing = sup.call("GET", "/api/v1/nothing/here", expect=404)
    assert "/api/v1/nothing/here" in missing["status"]
    assert "Not Found" in sup.call("GET", "/api/v1/cam/sim/config/extra", expect=404)["status"]
    assert "Method Not Allowed" in sup.call("PATCH", "/api/v1/cam", expect=405)["status"]
    assert "Method Not Allowed" in sup.call("PUT", "/api/v1/cam/sim/config", expect=405)["status"]
    assert "Method Not Allowed" in sup.call("DELETE", "/api/v1/logs", expect=405)["status"]
    assert sup.call("GET", "/api/v1/cam/version")["version"] == shmcam.__version__
    assert sup.call("GET", "/api/v1/pipeline/version")["version"] == shmcam.__version__
    for path in ("", "/is_online", "/config", "/geometry", "/image", "/image_bytes"):
        answer = sup.call("GET", f"/api/v1/cam/nope{path}", expect=404)
        assert "'nope'" in answer["status"], (path, answer)
        invalid = sup.call("GET", f"/api/v1/cam/a..b{path}", expect=400)
        assert "'a..b': use 1-100 characters" in invalid["status"], (path, invalid)
    for path in ("", "/del", "/config"):
        assert "'nope'" in sup.call("DELETE", f"/api/v1/cam/nope{path}", expect=404)["status"]
    sup.call("POST", "/api/v1/cam/a..b/config", json=CAM, expect=400)
    assert sup.call("GET", "/api/v1/cam")["cameras"] == ["sim"]
    assert active(sup, "camera") == {}


def test_camera_lists_aliases_and_groups_follow_the_configs(supervisor):
    sup = supervisor(
        cameras={
            "sim": {**CAM, "alias": ["front", "screen1"], "group": "linac"},
            "b": {**CAM, "alias": "back", "group": "linac"},
            "c": {**CAM, "group": "injector"},
            "d": CAM,
        }
    )
    assert sup.call("GET", "/api/v1/cam")["cameras"] == ["b", "c", "d", "sim"]
    assert sup.call("GET", "/api/v1/pipeline/camera")["cameras"] == ["b", "c", "d", "sim"]
    assert sup.call("GET", "/api/v1/cam/aliases")["aliases"] == {
        "front": "sim",
        "screen1": "sim",
        "back": "b",
    }
    assert sup.call("GET", "/api/v1/cam/groups")["groups"] == {
        "linac": ["b", "sim"],
        "injector": ["c"],
    }
    info = sup.call("GET", "/api/v1/cam/info")["info"]
    assert info["version"] == shmcam.__version__ and info["active_instances"] == {}
    assert {"cpu", "memory", "tx", "rx"} <= info.keys()
    assert sup.call("GET", "/api/v1/cam/heartbeat")["instances"] == {}
    assert "deleted" in sup.call("DELETE", "/api/v1/cam/sim/config")["status"]
    assert sup.call("GET", "/api/v1/cam")["cameras"] == ["b", "c", "d"]
    assert sup.call("GET", "/api/v1/cam/aliases")["aliases"] == {"back": "b"}
    assert sup.call("GET", "/api/v1/cam/groups")["groups"] == {"linac": ["b"], "injector": ["c"]}
    assert "'sim'" in sup.call("GET", "/api/v1/cam/sim/config", expect=404)["status"]
    assert "'sim'" in sup.call("DELETE", "/api/v1/cam/sim/config", expect=404)["status"]
    assert not (sup.data_dir / "cameras" / "sim.json").exists()
    assert sup.call("GET", "/api/v1/cam/b/config")["config"]["alias"] == "back"


def test_camera_stream_delivers_frames_and_the_instance_is_listed(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    assert sup.call("GET", "/api/v1/cam/sim/is_online")["online"] is True  # starts on request
    stream = sup.call("GET", "/api/v1/cam/sim")["stream"]
    assert port_of(stream) in camera_ports(sup)
    assert sup.call("GET", "/api/v1/cam/sim")["stream"] == stream  # one instance per camera
    for message in receive(stream, 3):
        data = message.data
        assert data["image"].shape == (240, 320) and data["image"].dtype == np.uint16
        assert is_simulated_frame(data["image"])
        assert data["width"] == 320 and data["height"] == 240
        assert len(data["x_axis"]) == 320 and len(data["y_axis"]) == 240
    instances = active(sup, "camera")
    assert list(instances) == ["sim"]
    assert instances["sim"]["stream_address"] == stream
    assert instances["sim"]["camera_name"] == "sim" and instances["sim"]["is_stream_active"]
    assert instances["sim"]["config"] == CAM
    beat = sup.call("GET", "/api/v1/cam/heartbeat")["instances"]["sim"]  # CamServer's shape
    assert beat["pid"] in sup.instance_pids() and beat["simulation"] is True
    assert isinstance(beat["tx"], float) and beat["geometry"] == [320, 240]
    assert beat["frame_shape"] == "320x240x2"
    statistics = instances["sim"]["statistics"]
    assert re.fullmatch(r"[\d.]+Hz - \d+", statistics["tx"])
    assert instances["sim"]["camera_geometry"] == [320, 240]
    online = sup.call("GET", "/api/v1/cam/sim/is_online")
    assert online["online"] is True and online["status"] == "frames arriving"
    assert active(sup, "pipeline") == {}


def test_camera_config_post_is_saved_and_applied_to_the_running_camera(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    assert sup.call("GET", "/api/v1/cam/sim/config")["config"] == expanded_camera(CAM)
    assert sup.call("GET", "/api/v1/cam/sim/geometry")["geometry"] == [320, 240]
    smaller = {**CAM, "size_x": 160}
    answer = sup.call("POST", "/api/v1/cam/sim/config", json=smaller)
    assert answer["config"] == smaller and "saved" in answer["status"]
    assert sup.call("GET", "/api/v1/cam/sim/config")["config"] == expanded_camera(smaller)
    saved = json.loads((sup.data_dir / "cameras" / "sim.json").read_text())
    assert saved == smaller
    assert sup.call("GET", "/api/v1/cam/sim/geometry")["geometry"] == [160, 240]
    image = sup.call("GET", "/api/v1/cam/sim/image_bytes")["image"]
    assert image["shape"] == [240, 160]
    stream = sup.call("GET", "/api/v1/cam/sim")["stream"]
    assert receive(stream)[0].data["image"].shape == (240, 160)
    created = sup.call("POST", "/api/v1/cam/new/config", json=CAM)
    assert created["config"] == CAM
    assert sup.call("GET", "/api/v1/cam")["cameras"] == ["new", "sim"]


def test_bad_camera_config_is_400_naming_the_key_and_changes_nothing(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    stream = sup.call("GET", "/api/v1/cam/sim")["stream"]
    pid = sup.call("GET", "/api/v1/cam/heartbeat")["instances"]["sim"]["pid"]
    saved = (sup.data_dir / "cameras" / "sim.json").read_bytes()
    bad = [
        ({"frame_rate": -1}, "frame_rate"),
        ({"source_type": "nonsense"}, "source_type"),
        ({"size_x": "big"}, "size_x"),
        ({"size_y": 0}, "size_y"),
        ({"dtype": "str"}, "dtype"),
        ({"port": 70000}, "port"),
    ]
    for change, key in bad:
        answer = sup.call("POST", "/api/v1/cam/sim/config", json={**CAM, **change}, expect=400)
        assert answer["status"].startswith(f"camera config: {key} must be"), answer
    for body in ([CAM], "text", 3):
        answer = sup.call("POST", "/api/v1/cam/sim/config", json=body, expect=400)
        assert "JSON object" in answer["status"]
    not_json = sup.call(
        "POST",
        "/api/v1/cam/sim/config",
        data="{size_x: 1",
        headers={"Content-Type": "application/json"},
        expect=400,
    )
    assert "the request body is not JSON" in not_json["status"]
    for name in ("info", "heartbeat", "script"):  # GET /api/v1/cam/<name> is another route
        answer = sup.call("POST", f"/api/v1/cam/{name}/config", json=CAM, expect=400)
        assert answer["status"] == (
            f"camera name {name!r} is taken by the REST API "
            f"(/api/v1/cam/{name}); choose another name"
        )
        assert not (sup.data_dir / "cameras" / f"{name}.json").exists()
    assert sup.call("GET", "/api/v1/cam/sim/config")["config"] == expanded_camera(CAM)
    assert (sup.data_dir / "cameras" / "sim.json").read_bytes() == saved
    assert not (sup.data_dir / "history").exists()
    assert sup.call("GET", "/api/v1/cam/heartbeat")["instances"]["sim"]["pid"] == pid
    assert receive(stream)[0].data["image"].shape == (240, 320)


def test_camera_config_the_camera_cannot_run_with_changes_nothing(supervisor):
    """Valid on paper, but the camera cannot start with it (its port is taken): the old config
    must stay saved and the camera keep streaming."""
    sup = supervisor(cameras={"sim": CAM})
    stream = sup.call("GET", "/api/v1/cam/sim")["stream"]
    taken = {**CAM, "port": sup.rest_port}
    response = requests.post(sup.url + "/api/v1/cam/sim/config", json=taken, timeout=60)
    assert response.status_code in (400, 409) and response.json()["state"] == "error"
    assert "Address already in use" in response.json()["status"]
    assert sup.call("GET", "/api/v1/cam/sim/config")["config"] == expanded_camera(CAM), (
        "a refused camera config was saved anyway (manager.set_camera_config)"
    )
    assert list(active(sup, "camera")) == ["sim"], (
        "the camera was stopped by a config that was refused (manager.set_camera_config)"
    )
    assert receive(stream)[0].data["image"].shape == (240, 320)


def test_camera_image_png_and_image_bytes_show_the_latest_frame(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    plain = get(sup, "/api/v1/cam/sim/image")
    assert plain.status_code == 200 and plain.headers["content-type"] == "image/png"
    assert png_info(plain.content) == (320, 240, 2)  # CamServer's default colormap, rainbow
    grey = get(sup, "/api/v1/cam/sim/image", params={"colormap": "grey"})
    assert np.mean(png_pixels(grey.content) == 255) < 0.01  # its own range: hot pixels
    bright = get(
        sup, "/api/v1/cam/sim/image", params={"min_value": 0, "max_value": 100, "colormap": "grey"}
    )
    assert np.mean(png_pixels(bright.content) == 255) > 0.9
    dark = get(
        sup,
        "/api/v1/cam/sim/image",
        params={"min_value": 60000, "max_value": 60001, "colormap": "grey"},
    )
    assert np.mean(png_pixels(dark.content) == 0) > 0.99
    viridis = get(sup, "/api/v1/cam/sim/image", params={"colormap": "viridis"})
    assert png_info(viridis.content) == (320, 240, 2)
    assert png_info(get(sup, "/api/v1/cam/sim/image", params={"raw": 1}).content) == (320, 240, 0)
    half = get(sup, "/api/v1/cam/sim/image", params={"scale": 0.5})
    assert png_info(half.content) == (160, 120, 2)
    bogus = sup.call("GET", "/api/v1/cam/sim/image", params={"colormap": "bogus"}, expect=400)
    assert "colormap 'bogus'" in bogus["status"] and "viridis" in bogus["status"]
    for key, value in (
        ("min_value", "low"),
        ("max_value", ""),
        ("scale", "x"),
        ("scale", "-1"),
        ("scale", "0"),
        ("scale", "nan"),
    ):
        answer = sup.call("GET", "/api/v1/cam/sim/image", params={key: value}, expect=400)
        assert answer["status"].startswith(f"{key} must be a"), (key, value, answer)
    image = sup.call("GET", "/api/v1/cam/sim/image_bytes")["image"]
    assert image["shape"] == [240, 320] and image["dtype"] == "<u2"
    frame = decode(image)
    assert frame.max() > frame.min()
    assert is_simulated_frame(frame)
    assert sup.call("GET", "/api/v1/cam/sim/geometry")["geometry"] == [320, 240]


def test_deleting_cameras_stops_them(supervisor):
    sup = supervisor(cameras={"sim": CAM, "b": CAM})
    sup.call("GET", "/api/v1/cam/sim")
    sup.call("GET", "/api/v1/cam/b")
    pids = sup.call("GET", "/api/v1/cam/heartbeat")["instances"]
    assert set(active(sup, "camera")) == {"sim", "b"}
    assert "stopped" in sup.call("DELETE", "/api/v1/cam/sim")["status"]
    assert set(active(sup, "camera")) == {"b"}
    assert pids["sim"]["pid"] not in sup.instance_pids()
    assert pids["b"]["pid"] in sup.instance_pids()
    stopped = sup.call("GET", "/api/v1/cam/sim/is_online")  # probed, not started
    assert stopped["online"] and "checked when they run" in stopped["status"]
    assert set(active(sup, "camera")) == {"b"}
    sup.call("DELETE", "/api/v1/cam/sim/del")  # forgotten: nothing to stop any more
    assert "'sim'" in sup.call("DELETE", "/api/v1/cam/sim", expect=404)["status"]
    sup.call("GET", "/api/v1/cam/sim")
    assert set(active(sup, "camera")) == {"sim", "b"}
    assert "stopped" in sup.call("DELETE", "/api/v1/cam")["status"]
    assert active(sup, "camera") == {} and sup.instance_pids() == []


# --- pipelines ---------------------------------------------------------------------------------


def test_saved_pipeline_configs_are_validated_listed_grouped_and_deleted(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    bad = [
        ({"camera_name": "nope"}, "camera_name 'nope'"),
        ({"camera_name": "sim", "mode": "BOGUS"}, "mode must be"),
        ({"camera_name": "sim", "queue_size": -1}, "queue_size must be"),
        ({"camera_name": "sim", "include": "image"}, "include must be"),
        ({"camera_name": "sim", "pid_range": [1]}, "pid_range must be"),
        ({"camera_name": "sim", "image_good_region": 3}, "image_good_region must be"),
        ({"mode": "PUB"}, "camera_name is required"),
    ]
    for config, message in bad:
        answer = sup.call("POST", "/api/v1/pipeline/p/config", json=config, expect=400)
        assert message in answer["status"], (config, answer)
    assert (
        "JSON object"
        in sup.call("POST", "/api/v1/pipeline/p/config", json=[PIPE], expect=400)["status"]
    )
    assert (
        "invalid name"
        in sup.call("POST", "/api/v1/pipeline/.p/config", json=PIPE, expect=400)["status"]
    )
    assert sup.call("GET", "/api/v1/pipeline")["pipelines"] == []
    assert not (sup.data_dir / "pipelines").exists()
    first = {**PIPE, "group": "linac", "image_threshold": 2.5}
    assert sup.call("POST", "/api/v1/pipeline/p1/config", json=first)["config"] == first
    sup.call("POST", "/api/v1/pipeline/p2/config", json=PIPE)
    assert sup.call("GET", "/api/v1/pipeline")["pipelines"] == ["p1", "p2"]
    assert sup.call("GET", "/api/v1/pipeline/config_names")["config_names"] == ["p1", "p2"]
    assert sup.call("GET", "/api/v1/pipeline/groups")["groups"] == {"linac": ["p1"]}
    assert sup.call("GET", "/api/v1/pipeline/p1/config")["config"] == expanded_pipeline(first)
    assert "deleted" in sup.call("DELETE", "/api/v1/pipeline/p1/config")["status"]
    assert sup.call("GET", "/api/v1/pipeline")["pipelines"] == ["p2"]
    assert "'p1'" in sup.call("GET", "/api/v1/pipeline/p1/config", expect=404)["status"]
    assert "'p1'" in sup.call("DELETE", "/api/v1/pipeline/p1/config", expect=404)["status"]
    assert active(sup, "pipeline") == {} and active(sup, "camera") == {}


def test_private_pipeline_streams_processed_frames(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    created = sup.call("POST", "/api/v1/pipeline", params={"instance_id": "x"}, json=PIPE)
    assert created["instance_id"] == "x" and created["config"] == expanded_pipeline(PIPE)
    assert port_of(created["stream"]) in pipeline_ports(sup)
    for message in receive(created["stream"], 3):
        data = message.data
        assert len(data["x_profile"]) == 320 and len(data["y_profile"]) == 240
        assert data["intensity"] == data["x_profile"].sum() > 0
        assert json.loads(data["processing_parameters"])["camera_name"] == "sim"
        assert is_simulated_frame(data["image"])
    info = sup.call("GET", "/api/v1/pipeline/instance/x/info")["info"]
    assert info["instance_id"] == "x" and info["camera_name"] == "sim"
    assert info["stream_address"] == created["stream"] and info["is_stream_active"]
    assert info["read_only"] is False and info["config"] == expanded_pipeline(PIPE)
    assert info["statistics"]["pid"] in sup.instance_pids()
    assert list(active(sup, "pipeline")) == ["x"] and list(active(sup, "camera")) == ["sim"]
    assert list(sup.call("GET", "/api/v1/pipeline/heartbeat")["instances"]) == ["x"]
    exit_state = sup.call("GET", "/api/v1/pipeline/instance/x/exitcode")
    assert exit_state["exitcode"] is None and exit_state["last_error"] is None
    assert instance_config(sup, "x") == expanded_pipeline(PIPE)
    again = sup.call("POST", "/api/v1/pipeline", params={"instance_id": "x"}, json=PIPE, expect=409)
    assert "already present and running" in again["status"]
    anonymous = sup.call("POST", "/api/v1/pipeline", json=PIPE)
    assert uuid.UUID(anonymous["instance_id"]).version == 4
    assert anonymous["stream"] != created["stream"]
    assert set(active(sup, "pipeline")) == {"x", anonymous["instance_id"]}


def test_pipeline_preview_is_its_output_image_and_goes_with_it(supervisor):
    """image, image_bytes and geometry of a pipeline show what it made of the frames (ROI,
    threshold), also with the image excluded from its stream; without an image, a clear 409."""
    sup = supervisor(cameras={"sim": CAM})
    config = {
        **PIPE,
        "image_region_of_interest": [10, 100, 20, 50],
        "image_threshold": 200,
        "exclude": ["image"],
    }
    sup.call("POST", "/api/v1/pipeline", params={"instance_id": "roi"}, json=config)
    base = "/api/v1/pipeline/instance/roi"
    answer = wait_for(
        lambda: (r := get(sup, f"{base}/image_bytes")).status_code == 200 and r,
        what="the pipeline's preview",
    )
    preview = decode(answer.json()["image"])
    assert preview.shape == (50, 100)
    assert preview.min() == 0 and preview.max() >= 200
    assert not np.any((preview > 0) & (preview < 200))  # thresholded
    assert sup.call("GET", f"{base}/geometry")["geometry"] == [100, 50]
    assert png_info(get(sup, f"{base}/image", params={"scale": 0.5}).content) == (50, 25, 2)
    assert any(".roi.preview." in name for name in sup.segments())

    sup.call(
        "POST",
        "/api/v1/pipeline",
        params={"instance_id": "plain"},
        json={"pipeline_type": "stream", "input_pipeline": "roi", "no_client_timeout": 0},
    )
    wait_for(lambda: counted(sup.call, "plain"), what="stream frames")
    blind = sup.call("GET", "/api/v1/pipeline/instance/plain/image", expect=409)
    assert "pipeline plain (only a 2-D numeric 'image'" in blind["status"]
    assert (
        "no pipeline instance 'gone'"
        in sup.call("GET", "/api/v1/pipeline/instance/gone/image", expect=404)["status"]
    )

    sup.call("DELETE", "/api/v1/pipeline/roi")
    wait_for(
        lambda: not any(".roi.preview." in name for name in sup.segments()),
        what="the preview ring to go with its pipeline",
    )
    assert sup.call("GET", f"{base}/image", expect=409)["status"] == "pipeline roi is not running"


def test_invalid_pipeline_requests_are_400_and_start_no_instance(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    bad = [
        ({"camera_name": "nope"}, None, "camera_name 'nope' is not a camera"),
        ({**PIPE, "mode": "BOGUS"}, None, "mode must be one of PUB, PUSH"),
        ({**PIPE, "queue_size": -1}, None, "queue_size must be a positive integer"),
        ({**PIPE, "include": "intensity"}, None, "include must be a list"),
        ({**PIPE, "pipeline_type": "storage"}, None, "pipeline_type must be"),
        ({**PIPE, "function": "no_such_script"}, None, "no_such_script"),
        (PIPE, "../x", "invalid instance_id '../x'"),
        (PIPE, "a.b", "invalid instance_id 'a.b'"),
        ([PIPE], None, "JSON object"),
    ]
    for config, instance_id, message in bad:
        params = {"instance_id": instance_id} if instance_id else {}
        answer = sup.call("POST", "/api/v1/pipeline", params=params, json=config, expect=400)
        assert message in answer["status"], (config, answer)
        if instance_id is None and "function" not in config:  # (a worker start: once)
            answer = sup.call("POST", "/api/v1/pipeline/instance/", json=config, expect=400)
            assert message in answer["status"], (config, answer)
    assert active(sup, "pipeline") == {}
    assert sup.call("GET", "/api/v1/pipeline/heartbeat")["instances"] == {}


def test_pipeline_from_a_saved_config_with_additional_config(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    saved = {**PIPE, "image_threshold": 1.0}
    sup.call("POST", "/api/v1/pipeline/saved/config", json=saved)
    extra = {"include": ["intensity", "x_profile"], "image_threshold": 2.0}
    created = sup.call(
        "POST",
        "/api/v1/pipeline/saved",
        params={"instance_id": "a", "additional_config": json.dumps(extra)},
    )
    merged = expanded_pipeline({**saved, **extra})
    assert created["instance_id"] == "a" and created["config"] == merged
    assert instance_config(sup, "a") == merged
    message = receive(created["stream"])[0]
    assert set(message.data) == {"intensity", "x_profile"}
    saved_now = sup.call("GET", "/api/v1/pipeline/saved/config")["config"]
    assert saved_now == expanded_pipeline(saved)  # not changed
    plain = sup.call("POST", "/api/v1/pipeline/saved", params={"instance_id": "b"})
    assert plain["config"] == expanded_pipeline(saved)
    for value, text in (
        ("{not json", "additional_config is not JSON"),
        ("[1, 2]", "additional_config must be a JSON object"),
        ('{"mode": "BOGUS"}', "mode must be"),
    ):
        answer = sup.call(
            "POST",
            "/api/v1/pipeline/saved",
            expect=400,
            params={"instance_id": "c", "additional_config": value},
        )
        assert text in answer["status"], answer
    unknown = sup.call("POST", "/api/v1/pipeline/nope", params={"instance_id": "d"}, expect=404)
    assert "'nope'" in unknown["status"]
    assert set(active(sup, "pipeline")) == {"a", "b"}


def test_shared_instance_starts_from_the_saved_config_once(supervisor):
    """Shared, and writable unless its config says read_only (CamServer since c970766)."""
    sup = supervisor(cameras={"sim": CAM})
    locked = {**PIPE, "read_only": True}
    sup.call("POST", "/api/v1/pipeline/shared/config", json=locked)
    first = sup.call("GET", "/api/v1/pipeline/instance/shared")
    assert first["instance_id"] == "shared" and first["config"] == expanded_pipeline(locked)
    assert sup.call("GET", "/api/v1/pipeline/instance/shared")["stream"] == first["stream"]
    info = sup.call("GET", "/api/v1/pipeline/instance/shared/info")["info"]
    assert info["read_only"] is True and info["shared"] is True and info["is_stream_active"]
    assert "x_profile" in receive(first["stream"])[0].data
    for update in ({"include": ["intensity"]}, {"read_only": False}):
        refused = sup.call(
            "POST", "/api/v1/pipeline/instance/shared/config", json=update, expect=409
        )
        assert refused["status"].startswith("Cannot set config on a read only instance.")
    assert instance_config(sup, "shared") == expanded_pipeline(locked)
    sup.call("POST", "/api/v1/pipeline/open/config", json=PIPE)
    sup.call("GET", "/api/v1/pipeline/instance/open")
    info = sup.call("GET", "/api/v1/pipeline/instance/open/info")["info"]
    assert info["read_only"] is False and info["shared"] is True
    sup.call("POST", "/api/v1/pipeline/instance/open/config", json={"include": ["intensity"]})
    assert instance_config(sup, "open") == expanded_pipeline({**PIPE, "include": ["intensity"]})
    assert "'nope'" in sup.call("GET", "/api/v1/pipeline/instance/nope", expect=404)["status"]
    assert sorted(active(sup, "pipeline")) == ["open", "shared"]


def test_instance_for_a_config_reuses_an_equal_shared_instance(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    private = sup.call("POST", "/api/v1/pipeline", params={"instance_id": "mine"}, json=PIPE)
    first = sup.call("POST", "/api/v1/pipeline/instance/", json=PIPE)
    assert first["instance_id"] != "mine" and first["stream"] != private["stream"]
    again = sup.call("POST", "/api/v1/pipeline/instance/", json=PIPE)
    assert (again["instance_id"], again["stream"]) == (first["instance_id"], first["stream"])
    other = sup.call("POST", "/api/v1/pipeline/instance/", json={**PIPE, "exclude": ["image"]})
    assert other["instance_id"] not in ("mine", first["instance_id"])
    assert "image" not in receive(other["stream"])[0].data
    for instance_id in (first["instance_id"], other["instance_id"]):
        info = sup.call("GET", f"/api/v1/pipeline/instance/{instance_id}/info")["info"]
        assert info["shared"] is True and info["read_only"] is False
    assert len(active(sup, "pipeline")) == 3


def test_live_config_update_is_merged_and_applied(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    start = {**PIPE, "image_good_region": {"threshold": 0.3}}
    created = sup.call("POST", "/api/v1/pipeline", params={"instance_id": "x"}, json=start)
    update = {
        "include": ["intensity", "width"],
        "image_good_region": {"gfscale": 3},
        "mode": "PUB",
        "queue_size": None,
    }  # stream keys as they are: accepted
    answer = sup.call("POST", "/api/v1/pipeline/instance/x/config", json=update)
    merged = {
        **PIPE,
        "image_good_region": {"threshold": 0.3, "gfscale": 3},
        "include": ["intensity", "width"],
        "mode": "PUB",
        "queue_size": None,
    }
    merged = expanded_pipeline(merged)
    assert answer["config"] == merged and instance_config(sup, "x") == merged
    assert (
        channels_after_update(created["stream"], {"intensity", "width"})
        == [{"intensity", "width"}] * 3
    )
    bad = [
        ({"camera_name": "other"}, 400, "Cannot change the camera name"),
        ({"downsampling": -1}, 400, "downsampling must be"),
        ({"include": "width"}, 400, "include must be"),
        ({"function": "no_such_script"}, 400, "no_such_script"),
        ({"mode": "PUSH"}, 400, "mode cannot change on a running instance"),
        (
            {"data_compression": "bitshuffle_lz4", "queue_size": 5},
            400,
            "queue_size, data_compression cannot change",
        ),
        ({"port": port_of(created["stream"]) + 1}, 400, "port cannot change"),
        ([1], 400, "JSON object"),
    ]
    for change, code, message in bad:
        answer = sup.call("POST", "/api/v1/pipeline/instance/x/config", json=change, expect=code)
        assert message in answer["status"], (change, answer)
    assert instance_config(sup, "x") == merged
    assert sup.call("GET", "/api/v1/pipeline/instance/x/info")["info"]["is_stream_active"]
    assert set(receive(created["stream"])[0].data) == {"intensity", "width"}


def test_stopped_and_forgotten_instances(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    sup.call("POST", "/api/v1/pipeline", params={"instance_id": "x"}, json=PIPE)
    pid = sup.call("GET", "/api/v1/pipeline/instance/x/info")["info"]["statistics"]["pid"]
    assert "stopped" in sup.call("DELETE", "/api/v1/pipeline/x")["status"]
    assert pid not in sup.instance_pids() and active(sup, "pipeline") == {}
    ended = sup.call("GET", "/api/v1/pipeline/instance/x/info", expect=404)  # CamServer forgets
    assert "Instance 'x' does not exist" in ended["status"]
    exit_state = sup.call("GET", "/api/v1/pipeline/instance/x/exitcode")
    assert exit_state["exitcode"] == 0 and exit_state["instance_state"] == "ended"
    stopped = sup.call(
        "POST", "/api/v1/pipeline/instance/x/config", json={"include": ["width"]}, expect=409
    )
    assert "not running" in stopped["status"]
    assert instance_config(sup, "x") == expanded_pipeline(PIPE)
    restarted = sup.call("POST", "/api/v1/pipeline", params={"instance_id": "x"}, json=PIPE)
    assert restarted["instance_id"] == "x" and receive(restarted["stream"])
    sup.call("POST", "/api/v1/pipeline", params={"instance_id": "y"}, json=PIPE)
    assert set(active(sup, "pipeline")) == {"x", "y"}
    assert "stopped" in sup.call("DELETE", "/api/v1/pipeline")["status"]
    assert active(sup, "pipeline") == {} and list(active(sup, "camera")) == ["sim"]
    assert receive_nothing(restarted["stream"])
    assert "removed" in sup.call("DELETE", "/api/v1/pipeline/x/del")["status"]
    for path in ("/info", "/exitcode", "/config"):
        answer = sup.call("GET", f"/api/v1/pipeline/instance/x{path}", expect=404)
        assert "'x'" in answer["status"]
    sup.call("POST", "/api/v1/pipeline/instance/x/config", json={"pause": True}, expect=404)
    sup.call("DELETE", "/api/v1/pipeline/x", expect=404)
    sup.call("DELETE", "/api/v1/pipeline/x/del", expect=404)
    sup.call("GET", "/api/v1/logs/instance/x", expect=404)
    assert sup.call("GET", "/api/v1/pipeline/instance/y/exitcode")["exitcode"] == 0


# --- backgrounds -------------------------------------------------------------------------------


def test_background_is_the_mean_of_n_different_camera_frames(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    assert (
        "'sim'" in sup.call("GET", "/api/v1/pipeline/camera/sim/background", expect=404)["status"]
    )
    taken = sup.call("POST", "/api/v1/pipeline/camera/sim/background", params={"n_images": 3})
    background_id = taken["background_id"]
    assert re.fullmatch(r"sim_\d{8}_\d{6}_\d{6}", background_id)
    stamp = datetime.strptime(background_id[4:], "%Y%m%d_%H%M%S_%f")
    assert abs((datetime.now() - stamp).total_seconds()) < 60
    image = sup.call("GET", f"/api/v1/pipeline/background/{background_id}/image_bytes")["image"]
    assert image["shape"] == [240, 320] and image["dtype"] == "<f8"
    background = decode(image)
    frames = np.array(FRAMES, dtype=np.float64)
    assert any(
        np.allclose(background, frames[list(three)].mean(axis=0))
        for three in itertools.combinations(range(len(FRAMES)), 3)
    ), "the background is not the mean of 3 different camera frames"
    png = get(sup, f"/api/v1/pipeline/background/{background_id}/image")
    assert png.headers["content-type"] == "image/png" and png_info(png.content) == (320, 240, 2)
    second = sup.call("POST", "/api/v1/pipeline/camera/sim/background", params={"n_images": 1})[
        "background_id"
    ]
    assert is_simulated_frame(
        decode(sup.call("GET", f"/api/v1/pipeline/background/{second}/image_bytes")["image"])
    )
    assert sup.call("GET", "/api/v1/pipeline/camera/sim/background")["background_id"] == second
    assert sup.call("GET", "/api/v1/pipeline/camera/sim/backgrounds")["background_ids"] == [
        background_id,
        second,
    ]
    for n_images in ("0", "abc", "1001", "-3"):
        answer = sup.call(
            "POST",
            "/api/v1/pipeline/camera/sim/background",
            params={"n_images": n_images},
            expect=400,
        )
        assert "n_images must be" in answer["status"]
    sup.call("POST", "/api/v1/pipeline/camera/nope/background", expect=404)
    sup.call("GET", "/api/v1/pipeline/background/nope/image", expect=404)
    sup.call("GET", "/api/v1/pipeline/background/nope/image_bytes", expect=404)
    assert len(list((sup.data_dir / "backgrounds").iterdir())) == 2


def test_background_uploads_as_npy_pickle_and_nested_list(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)

    def stored(name):
        return decode(sup.call("GET", f"/api/v1/pipeline/background/{name}/image_bytes")["image"])

    sup.call("PUT", "/api/v1/pipeline/background/npy/image_bytes", data=npy_bytes(image))
    assert np.array_equal(stored("npy"), image) and stored("npy").dtype == np.uint16
    for protocol in (2, 4, 5):
        name = f"pickle{protocol}"
        sup.call(
            "PUT",
            f"/api/v1/pipeline/background/{name}/image_bytes",
            data=pickle.dumps(image * 1.5, protocol=protocol),
        )
        assert np.array_equal(stored(name), image * 1.5)
    sup.call("PUT", "/api/v1/cam/background/cam_root/image_bytes", data=npy_bytes(image.T))
    assert np.array_equal(stored("cam_root"), image.T)
    posted = sup.call(
        "POST",
        "/api/v1/pipeline/background",
        json={"filename": "listed", "data": [[1, 2.5], [3, 4]]},
    )
    assert posted["background_id"] == "listed"
    assert np.array_equal(stored("listed"), [[1, 2.5], [3, 4]])
    assert png_info(get(sup, "/api/v1/pipeline/background/listed/image").content) == (2, 2, 2)
    names = sorted(os.listdir(sup.data_dir / "backgrounds"))

    bad_bodies = [
        ({"filename": "b"}, "nested list"),
        ({"data": [[1]]}, "nested list"),
        ({"filename": 3, "data": [[1]]}, "nested list"),
        ({"filename": "b", "data": "1,2"}, "nested list"),
        ({"filename": "b", "data": [[1, 2], [3]]}, "numeric nested list"),
        ({"filename": "b", "data": [1, 2]}, "2-D image"),
        ({"filename": "b", "data": [[]]}, "non-empty"),
        ({"filename": "b", "data": [["1", "2"]]}, "not a plain numeric type"),
        ({"filename": "../b", "data": [[1]]}, "invalid name"),
        ([[1]], "JSON object"),
    ]
    for body, message in bad_bodies:
        answer = sup.call("POST", "/api/v1/pipeline/background", json=body, expect=400)
        assert message in answer["status"], (body, answer)
    bad_uploads = [
        (b"", "refused"),
        (b"not an array", "refused"),
        (npy_bytes(image)[:-4], "truncated"),
        (npy_bytes(np.array(["a", "b"])), "not a plain numeric type"),
        (pickle.dumps([1, 2]), "refused"),
        (npy_bytes(np.arange(5.0)), "2-D image"),
        (pickle.dumps(np.zeros((2, 2, 2))), "2-D image"),
        (npy_bytes(np.zeros((2, 2), complex)), "real numbers"),
    ]
    for data, message in bad_uploads:
        for root in ("/api/v1/pipeline", "/api/v1/cam"):
            answer = sup.call("PUT", f"{root}/background/b/image_bytes", data=data, expect=400)
            assert message in answer["status"], (data[:40], answer)
    assert sorted(os.listdir(sup.data_dir / "backgrounds")) == names


class Exploit:
    """A pickle that runs a shell command when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_malicious_pickle_is_refused_and_never_run(supervisor, tmp_path):
    sup = supervisor(cameras={"sim": CAM})
    marker = tmp_path / "pwned"
    for protocol in (0, 2, 5):
        data = pickle.dumps(Exploit(marker), protocol=protocol)
        for root in ("/api/v1/pipeline", "/api/v1/cam"):
            answer = sup.call("PUT", f"{root}/background/evil/image_bytes", data=data, expect=400)
            assert "refused" in answer["status"] and "system" in answer["status"], answer
    assert not marker.exists()
    sup.call("GET", "/api/v1/pipeline/background/evil/image_bytes", expect=404)
    assert not (sup.data_dir / "backgrounds").exists()


def test_background_names_cannot_leave_the_store(supervisor, tmp_path):
    sup = supervisor(cameras={"sim": CAM})
    sup.call("PUT", "/api/v1/pipeline/background/good/image_bytes", data=npy_bytes(np.ones((2, 2))))
    before = tree(tmp_path)
    array = npy_bytes(np.ones((2, 2)))
    for name in (
        "..%2F..%2Fx",
        "a%2Fb",
        "%2E%2E",
        ".hidden",
        "-x",
        "a..b",
        "x%00y",
        "%2E%2E%2F%2E%2E%2Fcameras%2Fsim",
    ):
        for method, path in (
            ("PUT", f"/api/v1/pipeline/background/{name}/image_bytes"),
            ("PUT", f"/api/v1/cam/background/{name}/image_bytes"),
            ("GET", f"/api/v1/pipeline/background/{name}/image_bytes"),
            ("GET", f"/api/v1/pipeline/background/{name}/image"),
        ):
            response = requests.request(method, sup.url + path, data=array, timeout=60)
            assert response.status_code in (400, 404), (path, response.text)
            assert response.json()["state"] == "error"
        answer = sup.call(
            "POST",
            "/api/v1/pipeline/background",
            expect=400,
            json={"filename": name.replace("%2F", "/").replace("%2E", "."), "data": [[1]]},
        )
        assert "invalid name" in answer["status"], (name, answer)
    for camera in ("%2E%2E", "a..b"):
        sup.call("POST", f"/api/v1/pipeline/camera/{camera}/background", expect=400)
        sup.call("GET", f"/api/v1/pipeline/camera/{camera}/backgrounds", expect=400)
    assert tree(tmp_path) == before
    assert sup.call("GET", "/api/v1/cam/sim/config")["config"] == expanded_camera(CAM)


# --- scripts and libs --------------------------------------------------------------------------


def test_scripts_and_libs_round_trip(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    script = b"def process_image(*args):\n    return {}\n"
    for root, kind, listing, second in (
        ("/api/v1/pipeline", "script", "scripts", "two.c"),
        ("/api/v1/pipeline", "lib", "libs", "two.c"),
        ("/api/v1/cam", "script", "scripts", "two.py"),  # camera sources are Python
    ):
        base = f"{root}/{kind}"
        assert sup.call("GET", base)[listing] == []
        assert "'one.py'" in sup.call("GET", f"{base}/one.py/{kind}_bytes", expect=404)["status"]
        sup.call("PUT", f"{base}/one.py/{kind}_bytes", data=script)
        sup.call(
            "PUT",
            f"{base}/{second}/{kind}_bytes",
            data=C_FUNCTION if second.endswith(".c") else script,
        )
        assert sup.call("GET", base)[listing] == ["one.py", second]
        assert sup.call("GET", f"{base}/one.py/{kind}_bytes")[kind] == script.decode()
        sup.call("PUT", f"{base}/one.py/{kind}_bytes", data=b"# v2\n")
        assert sup.call("GET", f"{base}/one.py/{kind}_bytes")[kind] == "# v2\n"
        for bad in ("%2E%2E", ".hidden", "-rf", "a..b", "a%20b", "x" * 101):
            for method in ("GET", "PUT", "DELETE"):
                answer = sup.call(method, f"{base}/{bad}/{kind}_bytes", data=b"x", expect=400)
                assert "invalid name" in answer["status"], (bad, answer)
        sup.call("PUT", f"{base}/a%2Fb/{kind}_bytes", data=b"x", expect=404)
        assert "deleted" in sup.call("DELETE", f"{base}/one.py/{kind}_bytes")["status"]
        sup.call("GET", f"{base}/one.py/{kind}_bytes", expect=404)
        sup.call("DELETE", f"{base}/one.py/{kind}_bytes", expect=404)
        sup.call("DELETE", f"{base}/{second}/{kind}_bytes")
        assert sup.call("GET", base)[listing] == []
    # a camera script never replaces the pipeline script of the same name
    sup.call("PUT", "/api/v1/pipeline/script/same.py/script_bytes", data=b"# pipeline\n")
    sup.call("PUT", "/api/v1/cam/script/same.py/script_bytes", data=b"# camera\n")
    assert (
        sup.call("GET", "/api/v1/pipeline/script/same.py/script_bytes")["script"] == "# pipeline\n"
    )
    assert sup.call("GET", "/api/v1/cam/script/same.py/script_bytes")["script"] == "# camera\n"
    stored = {p.relative_to(sup.data_dir).parts[0] for p in sup.data_dir.rglob("*") if p.is_file()}
    assert stored <= {"cameras", "scripts", "camera_scripts", "libs", "history", "cache"}


# --- logs --------------------------------------------------------------------------------------


def test_server_and_instance_logs(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    records = sup.call("GET", "/api/v1/logs")["logs"]  # CamServer's [time, logger, level, msg]
    assert any("REST API on" in message for _, _, _, message in records)
    assert all(len(r) == 4 and r[2] in ("DEBUG", "INFO", "WARNING", "ERROR") for r in records)
    text = get(sup, "/api/v1/logs/txt")
    assert text.headers["content-type"].startswith("text/plain")
    assert "REST API on" in text.text
    sup.call("PUT", "/api/v1/pipeline/script/chatty.py/script_bytes", data=LOGGING_SCRIPT)
    sup.call(
        "POST",
        "/api/v1/pipeline",
        params={"instance_id": "talk"},
        json={**PIPE, "function": "chatty"},
    )
    entries = wait_for(
        lambda: sup.call("GET", "/api/v1/logs/instance/talk")["logs"], what="instance log lines"
    )
    assert any(
        name == "shmcam.instance.talk" and level == "WARNING" and "user script loaded" in message
        for _, name, level, message in entries
    ), entries
    text = get(sup, "/api/v1/logs/instance/talk/txt")
    assert text.headers["content-type"].startswith("text/plain")
    assert "WARNING shmcam.instance.talk: user: user script loaded" in text.text
    assert isinstance(sup.call("GET", "/api/v1/logs/instance/sim")["logs"], list)
    assert "'nope'" in sup.call("GET", "/api/v1/logs/instance/nope", expect=404)["status"]
    sup.call("GET", "/api/v1/logs/instance/nope/txt", expect=404)
    records = sup.call("GET", "/api/v1/logs")["logs"]  # recent records, not start-up
    assert any(message.endswith("scripts/chatty.py") for *_, message in records)


# --- auth --------------------------------------------------------------------------------------


def test_changes_need_the_token_and_change_nothing_without_it(supervisor):
    sup = supervisor(cameras={"sim": CAM}, token="s3cret")
    sup.call("GET", "/api/v1/cam/sim")
    assert sup.call("GET", "/api/v1/cam/sim/config")["config"] == expanded_camera(
        CAM
    )  # reads stay open
    changes = [
        ("POST", "/api/v1/cam/sim/config", {"json": {**CAM, "size_x": 64}}),
        ("DELETE", "/api/v1/cam/sim/config", {}),
        ("DELETE", "/api/v1/cam/sim", {}),
        ("DELETE", "/api/v1/cam", {}),
        ("PUT", "/api/v1/pipeline/script/s.py/script_bytes", {"data": b"x = 1\n"}),
        ("PUT", "/api/v1/cam/script/s.py/script_bytes", {"data": b"x = 1\n"}),
        ("PUT", "/api/v1/pipeline/lib/l.c/lib_bytes", {"data": b"int x;\n"}),
        ("POST", "/api/v1/pipeline/p/config", {"json": PIPE}),
        ("POST", "/api/v1/pipeline", {"json": PIPE, "params": {"instance_id": "x"}}),
        ("POST", "/api/v1/pipeline/instance/", {"json": PIPE}),
        ("POST", "/api/v1/pipeline/camera/sim/background", {}),
        ("PUT", "/api/v1/pipeline/background/b/image_bytes", {"data": npy_bytes(np.ones((2, 2)))}),
        ("POST", "/api/v1/pipeline/background", {"json": {"filename": "b", "data": [[1]]}}),
    ]
    files = tree(sup.data_dir)
    for header in (
        "",
        "Bearer wrong",
        "s3cret",
        "Bearer s3cret2",
        "bearer s3cret",
        "Basic czNjcmV0",
    ):
        for method, path, kwargs in changes:
            answer = sup.call(method, path, headers={"Authorization": header}, expect=401, **kwargs)
            assert "Authorization: Bearer" in answer["status"], (header, path, answer)
    response = requests.delete(sup.url + "/api/v1/cam", timeout=60)  # no header at all
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert tree(sup.data_dir) == files
    assert sup.call("GET", "/api/v1/cam/sim/config")["config"] == expanded_camera(CAM)
    assert sup.call("GET", "/api/v1/pipeline/script")["scripts"] == []
    assert list(active(sup, "camera")) == ["sim"] and active(sup, "pipeline") == {}
    sup.call("PUT", "/api/v1/pipeline/script/s.py/script_bytes", data=b"x = 1\n")
    assert sup.call("GET", "/api/v1/pipeline/script")["scripts"] == ["s.py"]
    sup.call("POST", "/api/v1/cam/sim/config", json={**CAM, "size_x": 64})
    assert sup.call("GET", "/api/v1/cam/sim/geometry")["geometry"] == [64, 240]
    sup.call("DELETE", "/api/v1/cam", headers={"Authorization": "Bearer s3cret"})
    assert active(sup, "camera") == {}


def test_camera_named_with_a_dot_is_a_clear_400(supervisor):
    sup = supervisor(cameras={"cam.1": CAM})
    answer = sup.call("GET", "/api/v1/cam/cam.1", expect=400)
    assert "'cam.1': use 1-100 characters" in answer["status"]
    refused = sup.call("POST", "/api/v1/cam/cam.2/config", json=CAM, expect=400)
    assert "invalid name 'cam.2'" in refused["status"]
    assert "cam.2" not in sup.call("GET", "/api/v1/cam")["cameras"]
