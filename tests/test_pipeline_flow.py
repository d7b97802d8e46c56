"""The pipeline's flow-control keys: unit rules of the gate, and their effect on a live stream."""

from __future__ import annotations

import time

import numpy as np
from supervisor_harness import SIM_CAMERA

from shmcam.bsread import Receiver
from shmcam.workers import pipeline_keys
from shmcam.workers.gate import Gate
from shmcam.workers.inputs import detach
from shmcam.workers.output import select


def admitted(config, pulse_ids):
    gate = Gate(config)
    return [p for p in pulse_ids if gate.admit(p)]


def test_gate_rules():
    ids = list(range(100, 120))
    assert admitted({}, ids) == ids
    assert admitted({"pause": True}, ids) == []
    assert admitted({"downsampling": 5}, ids) == [104, 109, 114, 119]
    assert admitted({"pid_range": [110, None]}, ids) == ids[10:]
    assert admitted({"enforce_pid": True}, [5, 6, 6, 4, 7]) == [5, 6, 7]
    assert admitted({"max_frame_rate": 1e-3}, ids) == [100]  # one frame per 1000 s
    gate = Gate({"records": 3, "pid_range": [None, 150]})
    assert gate.finished(120, 2) is None
    assert gate.finished(120, 3) == "3 records sent"
    assert gate.finished(150, 0) == "pid_range end 150 reached"
    assert gate.passed(150) is None and gate.passed(151) == "pid_range end 150 passed"
    assert Gate({}).passed(10**12) is None


def test_select_and_detach():
    ring_slot = np.arange(12, dtype=np.uint16).reshape(3, 4)
    result = {"image": ring_slot, "row": ring_slot[1], "own": np.ones(3), "n": 1}
    keys = pipeline_keys.output({"include": ["image", "n", "absent"], "exclude": ["n"]})
    assert select(result, keys) == {"image": ring_slot, "absent": None}  # CamServer's None
    safe = detach(dict(result), ring_slot)
    assert not np.may_share_memory(safe["image"], ring_slot)
    assert not np.may_share_memory(safe["row"], ring_slot)
    assert safe["own"] is result["own"]  # the function's own arrays are not copied
    assert np.array_equal(safe["image"], ring_slot)


def rate(stream, seconds=1.5):
    """Messages per second on a stream, after the first one arrived."""
    with Receiver(stream, timeout=3) as receiver:
        assert receiver.receive() is not None or seconds == 0
        count, t_end = 0, time.monotonic() + seconds
        while time.monotonic() < t_end:
            count += receiver.receive(timeout=max(0.0, t_end - time.monotonic())) is not None
        return count / seconds


def test_live_config_updates_change_the_stream(supervisor):
    sup = supervisor(cameras={"sim": SIM_CAMERA})  # 50 Hz
    stream = sup.call(
        "POST",
        "/api/v1/pipeline",
        params={"instance_id": "live"},
        json={"camera_name": "sim", "no_client_timeout": 0},
    )["stream"]
    assert rate(stream) > 35
    sup.call("POST", "/api/v1/pipeline/instance/live/config", json={"downsampling": 5})
    assert 5 <= rate(stream) <= 15
    sup.call(
        "POST",
        "/api/v1/pipeline/instance/live/config",
        json={"downsampling": 1, "max_frame_rate": 4},
    )
    assert 2 <= rate(stream) <= 6
    sup.call("POST", "/api/v1/pipeline/instance/live/config", json={"pause": True})
    with Receiver(stream, timeout=1.0) as receiver:
        receiver.receive(timeout=0.5)  # one may still be under way
        assert receiver.receive(timeout=1.0) is None
    sup.call(
        "POST",
        "/api/v1/pipeline/instance/live/config",
        json={"pause": False, "max_frame_rate": None},
    )
    assert rate(stream) > 35
