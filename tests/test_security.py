"""Who may do what on a node, tried as a hostile client would (issue 11, security items):
every route with every method, code on a node without a token, and a REST server that idle
connections, slow calls and huge bodies cannot starve."""

from __future__ import annotations

import hashlib
import socket
import threading
import time

import psutil
import pytest
import requests
from route_listing import coordinator_routes, node_routes
from supervisor_harness import SIM_CAMERA, wait_for
from werkzeug.exceptions import MethodNotAllowed

from shmcam.supervisor.api.common import READ

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
TOKEN = "s3cret-token"
SCRIPT = (
    b"def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters):\n    return {}\n"
)
# A bsread camera nobody sends to: it runs, and every frame read from it waits in vain.
SILENT = {"source_type": "bschannel", "source": "tcp://127.0.0.1:9"}


def route_table(app):
    """Every rule of the app, and `declared(path, method)`: the permission of the view that
    path and method reach (None where the method is not allowed)."""
    adapter = app.url_map.bind("node")
    rules = sorted(r.rule for r in app.url_map.iter_rules() if not r.endpoint.endswith("static"))

    def declared(path: str, method: str) -> str | None:
        try:
            endpoint, _ = adapter.match(path, "GET" if method == "HEAD" else method)
        except MethodNotAllowed:
            return None
        return app.view_functions[endpoint].permission

    return rules, declared


def filled(rule: str) -> str:
    """A rule with its variables named after things that exist on the node under test."""
    names = {
        "camera": "sim",
        "name": "sim",
        "instance_id": "run1",
        "instance": "run1",
        "index_or_name": "0",
        "background_id": "bg1",
        "path": "active_instances",
    }
    path = rule
    for variable, value in names.items():
        path = path.replace(f"<{variable}>", value)
    return path.replace("/script/sim/", "/script/s.py/").replace("/lib/sim/", "/lib/l.py/")


def state(sup) -> dict:
    """What a mutating call could change: every stored file, and the running pipeline."""
    files = {
        str(p.relative_to(sup.data_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sup.data_dir.rglob("*")
        if p.is_file() and "cache" not in p.parts
    }
    info = sup.call("GET", "/api/v1/pipeline/instance/run1/info")["info"]
    return {"files": files, "run1": (info["state"], info["config"], info["statistics"]["pid"])}


def test_every_route_with_every_method_is_authorised_by_what_it_does(supervisor):
    """The bug: Flask answers HEAD with a route's GET view, and views that branched on "not
    GET" deleted, stored and updated without the token. Now each method has its own view
    with its declared permission: without the token every changing call is 401 whatever the
    method, reads answer without 5xx, and nothing changes."""
    sup = supervisor(
        cameras={"sim": SIM_CAMERA},
        pipelines={"pp": {"camera_name": "sim"}},
        token=TOKEN,
    )
    sup.call("PUT", "/api/v1/pipeline/script/s.py/script_bytes", data=SCRIPT)
    sup.call("PUT", "/api/v1/pipeline/lib/l.py/lib_bytes", data=b"X = 1\n")
    sup.call("PUT", "/api/v1/cam/script/s.py/script_bytes", data=b"X = 1\n")
    sup.call("POST", "/api/v1/pipeline/background", json={"filename": "bg1", "data": [[1, 2]]})
    sup.call(
        "POST", "/api/v1/pipeline", params={"instance_id": "run1"}, json={"camera_name": "sim"}
    )
    before = state(sup)
    assert sweep(sup.url, node_routes()) >= {"POST", "PUT", "DELETE"}
    assert state(sup) == before


def sweep(url: str, app) -> set[str]:
    """Every route of `app` with every method, without a token, at the server `url`: the
    methods that were refused for want of it."""
    rules, declared_for = route_table(app)
    assert len(rules) > 40
    refused = set()
    for rule in rules:
        path = filled(rule)
        for method in METHODS:
            response = requests.request(method, url + path, json={"camera_name": "sim"}, timeout=60)
            declared = declared_for(path, method)
            where = (method, path, response.status_code, response.text[:200])
            assert response.status_code < 500, where
            if method == "OPTIONS":
                assert response.status_code == 200, where
            elif declared is None:
                assert response.status_code == 405, where
            elif declared == READ:
                assert response.status_code != 401, where
            else:
                assert response.status_code == 401, where
                refused.add(method)
    return refused


def test_the_coordinator_is_authorised_the_same_way(tmp_path, node):
    """The coordinator's routes (the CamServer API over the cluster and its proxy routes)
    declare their permissions the same way: nothing changes anywhere without its token."""
    from cluster_harness import Cluster

    c = Cluster(
        tmp_path / "c",
        node,
        count=1,
        cameras={"sim": SIM_CAMERA},
        pipelines={"pp": {"camera_name": "sim"}},
        token=TOKEN,
    )
    try:
        c.start()
        c.call("POST", "/api/v1/pipeline/background", json={"filename": "bg1", "data": [[1, 2]]})
        c.call(
            "POST",
            "/api/v1/pipeline",
            params={"instance_id": "run1"},
            json={"camera_name": "sim", "no_client_timeout": 0},
        )
        (node_sup,) = c.nodes.values()
        stored = [
            sorted(p.name for p in d.rglob("*"))
            for d in (c.coordinator.data_dir, node_sup.data_dir)
        ]
        pid = c.call("GET", "/api/v1/pipeline/instance/run1/info")["info"]["statistics"]["pid"]
        assert sweep(c.coordinator.url, coordinator_routes()) >= {"POST", "PUT", "DELETE"}
        after = [
            sorted(p.name for p in d.rglob("*"))
            for d in (c.coordinator.data_dir, node_sup.data_dir)
        ]
        assert after == stored
        info = c.call("GET", "/api/v1/pipeline/instance/run1/info")["info"]
        assert info["statistics"]["pid"] == pid and info["state"] == "running"
    finally:
        c.stop()


def test_a_node_without_token_runs_no_code_sent_anonymously(supervisor):
    sup = supervisor(cameras={"sim": SIM_CAMERA}, settings={"allow_anonymous_code": False})
    assert any("has no token: anyone who reaches" in line for line in sup.log_lines())
    for path in (
        "/api/v1/pipeline/script/f.py/script_bytes",
        "/api/v1/pipeline/script/f.c/script_bytes",
        "/api/v1/pipeline/lib/m.py/lib_bytes",
        "/api/v1/cam/script/src.py/script_bytes",
    ):
        answer = sup.call("PUT", path, data=SCRIPT, expect=403)
        assert "runs no code sent anonymously" in answer["status"]
        assert "token_file" in answer["status"]
    external = {"pipeline_type": "external", "executable": "/bin/true"}
    for method, path in (("POST", "/api/v1/pipeline"), ("POST", "/api/v1/pipeline/x/config")):
        assert "runs no code" in sup.call(method, path, json=external, expect=403)["status"]
    assert not (sup.data_dir / "scripts").exists() and not (sup.data_dir / "libs").exists()
    # everything else stays open, as CamServer's clients expect
    sup.call("POST", "/api/v1/pipeline", params={"instance_id": "p"}, json={"camera_name": "sim"})
    sup.call("POST", "/api/v1/cam/other/config", json=SIM_CAMERA)


def test_a_node_may_take_anonymous_code_when_configured_but_never_a_binary(supervisor):
    sup = supervisor(settings={"allow_anonymous_code": True})
    sup.call("PUT", "/api/v1/pipeline/script/f.py/script_bytes", data=SCRIPT)
    answer = sup.call(
        "PUT", "/api/v1/pipeline/script/f.so/script_bytes", data=b"\x7fELF", expect=403
    )
    assert "needs a node with a token" in answer["status"]
    assert sup.call("GET", "/api/v1/pipeline/script")["scripts"] == ["f.py"]


def test_with_a_token_code_needs_it_and_a_binary_too(supervisor):
    sup = supervisor(token=TOKEN, settings={"allow_anonymous_code": False})
    response = requests.put(sup.url + "/api/v1/pipeline/script/f.py/script_bytes", data=SCRIPT)
    assert response.status_code == 401
    sup.call("PUT", "/api/v1/pipeline/script/f.py/script_bytes", data=SCRIPT)  # with the token


# --- starvation ----------------------------------------------------------------------------


def info_answers(sup, timeout: float = 5.0) -> float:
    """Seconds GET /api/v1/pipeline/info took (fails if it did not answer in time)."""
    started = time.monotonic()
    response = requests.get(sup.url + "/api/v1/pipeline/info", timeout=timeout)
    assert response.status_code == 200
    return time.monotonic() - started


def test_idle_connections_and_slow_calls_do_not_starve_the_api(supervisor):
    """The bugs: 100 idle TCP connections stopped the server answering (waitress's limit),
    and 8 slow calls held all its threads. Slow calls now take at most a quarter of the
    threads (the rest are answered 503 at once) and idle connections only a slot each."""
    sup = supervisor(cameras={"silent": SILENT})
    idle = [socket.create_connection(("127.0.0.1", sup.rest_port)) for _ in range(150)]
    answers: list[int] = []

    def slow():
        answers.append(requests.get(sup.url + "/api/v1/cam/silent/image", timeout=60).status_code)

    threads = [threading.Thread(target=slow) for _ in range(12)]
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: len(answers) >= 8, what="the surplus slow calls turned away")
        assert set(answers) == {503}  # the 4 allowed ones still wait for a frame
        info_answers(sup)
        for thread in threads:
            thread.join()
        assert answers.count(409) == 4 and answers.count(503) == 8  # no frame came in time
    finally:
        for connection in idle:
            connection.close()
    info_answers(sup)


def test_bodies_above_a_routes_limit_are_refused_with_413_and_the_memory_comes_back(supervisor):
    sup = supervisor(settings={"max_config_kb": 64, "max_upload_mb": 8})
    process = psutil.Process(sup.process.pid)
    rss = process.memory_info().rss
    big = b"{" + b" " * (2 << 20) + b"}"
    answer = sup.call(
        "POST",
        "/api/v1/cam/x/config",
        data=big,
        expect=413,
        headers={"Content-Type": "application/json"},
    )
    assert "this route takes at most 65536" in answer["status"]
    # above the largest limit of any route, waitress refuses it itself, in the same envelope
    response = requests.put(
        sup.url + "/api/v1/pipeline/lib/big/lib_bytes", data=b"x" * (12 << 20), timeout=60
    )
    assert response.status_code == 413
    assert response.json()["state"] == "error"
    for _ in range(3):
        sup.call("PUT", "/api/v1/pipeline/lib/ok/lib_bytes", data=b"x" * (7 << 20))
    assert process.memory_info().rss - rss < 64 << 20
    assert sup.call("GET", "/api/v1/pipeline/lib")["libs"] == ["ok"]


@pytest.mark.parametrize(
    "request_line",
    [b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", b"BROKEN\r\n\r\n"],
)
def test_the_servers_own_errors_carry_the_json_envelope(supervisor, request_line):
    sup = supervisor()
    with socket.create_connection(("127.0.0.1", sup.rest_port), timeout=10) as connection:
        connection.sendall(request_line)
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 400 " in head.split(b"\r\n")[0], reply
    assert b"application/json" in head and b'"state": "error"' in body, reply
