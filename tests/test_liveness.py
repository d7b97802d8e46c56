"""A node that one stuck or dead instance cannot freeze, and that outlives its own crashes
(issue 11, liveness items), with real supervisors and real instance processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import requests
from supervisor_harness import SIM_CAMERA, Supervisor, receive, wait_for

from shmcam.shm import segment

# Holds the GIL for ever in one C call (the regex engine): no Python code of the instance,
# its control thread and signal handlers included, runs again. The warm-up call (pulse 0) and
# the first frames pass, so that the instance gets ready.
STUCK = b"""
import re
calls = 0

def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters):
    global calls
    calls += 1
    if calls > 3:
        re.match(r"(a+)+$", "a" * 64 + "b")
    return {"calls": calls}
"""
PIPE = {"camera_name": "sim", "no_client_timeout": 0}


def stuck_pipeline(sup, instance_id: str) -> None:
    sup.call("PUT", "/api/v1/pipeline/script/stuck.py/script_bytes", data=STUCK)
    sup.call(
        "POST",
        "/api/v1/pipeline",
        params={"instance_id": instance_id},
        json={**PIPE, "function": "stuck"},
    )
    assert info(sup, instance_id)["state"] == "running"
    time.sleep(1.0)  # three frames at 50 Hz, then it is stuck


def info(sup, instance_id: str) -> dict:
    return sup.call("GET", f"/api/v1/pipeline/instance/{instance_id}/info")["info"]


def test_a_stuck_instance_never_freezes_the_node_and_is_killed(supervisor):
    """The bug: live updates were written into the worker's stdin under the manager lock; a
    worker stuck in C never read them, the pipe filled after ~60 updates, and from then on
    every REST call, the watchdog and SIGTERM hung."""
    sup = supervisor(cameras={"sim": SIM_CAMERA}, settings={"stuck_timeout": 8})
    stuck_pipeline(sup, "stuck")
    pid = info(sup, "stuck")["statistics"]["pid"]
    first = {}
    waiting = threading.Thread(
        target=lambda: first.update(
            sup.call("POST", "/api/v1/pipeline/instance/stuck/config", json={"x": 0}, expect=503)
        )
    )
    waiting.start()
    time.sleep(0.5)
    padding = "p" * 4000
    for n in range(200):  # far more than a pipe holds: none of them may block anything
        answer = sup.call(
            "POST",
            "/api/v1/pipeline/instance/stuck/config",
            json={"x": n, "pad": padding},
            expect=503,
        )
        assert "has not answered the previous config update yet" in answer["status"]
    assert info(sup, "stuck")["statistics"]["control_pending"] <= 2  # (killed after 8 s)
    started = time.monotonic()
    sup.call("GET", "/api/v1/pipeline/info")
    assert time.monotonic() - started < 2
    waiting.join()
    assert "did not take the update within" in first["status"]
    config = sup.call("GET", "/api/v1/pipeline/instance/stuck/config")["config"]
    assert "x" not in config  # nothing changed
    # the watchdog sees no progress and kills it
    ended = wait_for(
        lambda: (e := sup.ended("stuck")) and e["instance_state"] == "failed" and e,
        timeout=30,
        what="the stuck instance to be killed",
    )
    assert "no progress for 8 s" in ended["last_error"]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_sigterm_ends_the_supervisor_in_time_however_many_instances_are_stuck(tmp_path, node):
    """Stuck instances are stopped together: the whole takes one stop timeout, not one per
    instance (4 stuck ones took 4 x 5 s and more before)."""
    sup = Supervisor(tmp_path, node, cameras={"sim": SIM_CAMERA}).start()
    try:
        for n in range(4):
            stuck_pipeline(sup, f"stuck{n}")
        pids = sup.instance_pids()
        started = time.monotonic()
        assert sup.stop() == 0
        took = time.monotonic() - started
        assert took < 15, took
        for pid in pids:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        assert not sup.segments()
    finally:
        sup.stop()


def test_a_refused_update_changes_nothing_and_says_why(supervisor):
    """The bug: an update naming a script that cannot load answered 200, and /info showed
    the new function while the worker kept the old one."""
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    sup.call(
        "PUT",
        "/api/v1/pipeline/script/breaks.py/script_bytes",
        data=b"raise ImportError('a missing dependency')\n",
    )
    sup.call("POST", "/api/v1/pipeline", params={"instance_id": "p"}, json=PIPE)
    answer = sup.call(
        "POST", "/api/v1/pipeline/instance/p/config", json={"function": "breaks"}, expect=400
    )
    assert "refused the update" in answer["status"]
    assert "a missing dependency" in answer["status"]
    assert "function" not in info(sup, "p")["config"]
    message = receive(info(sup, "p")["stream_address"], 1)[0]
    assert "x_profile" in message.data  # still the standard function
    good = sup.call("POST", "/api/v1/pipeline/instance/p/config", json={"image_threshold": 5})
    assert good["config"]["image_threshold"] == 5 == info(sup, "p")["config"]["image_threshold"]


def test_a_pipeline_that_does_not_start_leaves_no_camera_running(supervisor):
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    sup.call("PUT", "/api/v1/pipeline/script/fails.py/script_bytes", data=b"raise SystemExit(3)\n")
    sup.call("POST", "/api/v1/pipeline", json={**PIPE, "function": "fails"}, expect=400)
    assert sup.call("GET", "/api/v1/cam/info")["info"]["active_instances"] == {}
    # a camera already running for someone else stays
    sup.call("GET", "/api/v1/cam/sim")
    sup.call("POST", "/api/v1/pipeline", json={**PIPE, "function": "fails"}, expect=400)
    assert list(sup.call("GET", "/api/v1/cam/info")["info"]["active_instances"]) == ["sim"]


def test_a_restarting_permanent_instance_keeps_its_port(supervisor):
    """The bug: during a permanent instance's restart back-off its port was handed out, so
    it came back with "Address already in use" while its address served another stream."""
    sup = supervisor(
        cameras={"sim": SIM_CAMERA},
        pipelines={"perm": PIPE},
        permanent={"perm": "perm"},
    )
    before = wait_for(lambda: (i := info_or_none(sup, "perm")) and i["state"] == "running" and i)
    port = before["stream_address"].rsplit(":", 1)[1]
    os.kill(before["statistics"]["pid"], signal.SIGKILL)
    other = sup.call("POST", "/api/v1/pipeline", params={"instance_id": "other"}, json=PIPE)
    assert other["stream"].rsplit(":", 1)[1] != port
    after = wait_for(
        lambda: (
            (i := info(sup, "perm"))["state"] == "running"
            and i["statistics"]["pid"] != before["statistics"]["pid"]
            and i
        ),
        what="the permanent instance back",
    )
    assert after["stream_address"] == before["stream_address"]
    assert receive(after["stream_address"], 2)


def info_or_none(sup, instance_id):
    response = requests.get(f"{sup.url}/api/v1/pipeline/instance/{instance_id}/info", timeout=10)
    return response.json()["info"] if response.status_code == 200 else None


def test_a_second_supervisor_of_a_node_refuses_to_start_and_touches_nothing(supervisor):
    """The bug: a second `shmcam supervisor` with the same config wiped the live node's
    shared memory, then failed to bind."""
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    created = sup.call("POST", "/api/v1/pipeline", params={"instance_id": "p"}, json=PIPE)
    # published ones: a segment being made (the preview ring, once the first image is out)
    # has a draft name for a moment
    segments = [name for name in sup.segments() if ".draft" not in name]
    second = subprocess.run(
        [sys.executable, "-m", "shmcam.cli.main", "supervisor", "--config", str(sup.config_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0
    assert f"node {sup.node} is already run by another supervisor (pid {sup.process.pid})" in (
        second.stderr
    )
    assert set(segments) <= set(sup.segments())  # none removed (a preview ring may come)
    assert receive(created["stream"], 2)


def test_instances_die_with_a_killed_supervisor_and_its_successor_cleans_up(tmp_path, node):
    """The bug: a supervisor crash left stuck workers running for good, holding their ports
    and a segment, and the restarted supervisor ignored them."""
    sup = Supervisor(tmp_path, node, cameras={"sim": SIM_CAMERA}).start()
    survivor = None
    try:
        stuck_pipeline(sup, "stuck")
        sup.call("POST", "/api/v1/pipeline", params={"instance_id": "p"}, json=PIPE)
        pids = sup.instance_pids()
        assert len(pids) == 3
        # an instance of an older release that would not die with its supervisor
        survivor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        record = {
            "pid": survivor.pid,
            "started": psutil.Process(survivor.pid).create_time(),
            "kind": "pipeline",
            "instance": "old",
        }
        pid_dir = tmp_path / "run" / node / "pids"
        (pid_dir / str(survivor.pid)).write_text(json.dumps(record))
        sup.stop(signal.SIGKILL)
        wait_for(
            lambda: (
                not any(
                    psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids
                )
            ),
            timeout=10,
            what="the instances to die with their supervisor",
        )
        assert sup.segments()  # what the dead instances left
        assert survivor.poll() is None
        successor = Supervisor(tmp_path, node, cameras={"sim": SIM_CAMERA}).start()
        try:
            assert survivor.wait(10) is not None
            assert any(
                "ended 1 instances a previous supervisor left" in line
                for line in successor.log_lines()
            )
            left = [s for s in segment.list_segments(f"shmcam.{node}.")]
            assert left == [], left
        finally:
            successor.stop()
    finally:
        if survivor is not None and survivor.poll() is None:
            survivor.kill()
        sup.stop()
