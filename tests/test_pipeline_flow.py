"""The pipeline's flow-control keys: unit rules of the gate, and their effect on a live stream."""

from __future__ import annotations

import time

import numpy as np
from supervisor_harness import SIM_CAMERA

from shmcam.bsread import Receiver
from shmcam.shm import StatsBlock, remove_ring, ring_base, stats_name
from shmcam.workers import pipeline_keys
from shmcam.workers.gate import Gate
from shmcam.workers.inputs import RecordInput, detach
from shmcam.workers.output import RecordOutput, select


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


def test_a_cascade_through_a_record_ring(node):
    """What an upstream writes while asked to (RecordOutput) a cascade reads in place
    (RecordInput): views of the slot, copied when a result keeps them, torn when overwritten."""
    base = ring_base(node, "up", "out")
    stats = StatsBlock(stats_name(node, "up"), create=True)
    records = RecordOutput(base, stats)
    records.write({"n": 1}, 1, (0, 1))  # not asked to: nothing written, nothing made
    records.follow(True)
    cascade = RecordInput(base)
    try:
        image = np.arange(12, dtype=np.uint16).reshape(3, 4)
        records.write({"image": image, "bad": {"a": 1}}, 2, (0, 2))  # no record holds a dict
        assert stats.snapshot()["errors"] == 1
        records.write({"image": image, "x_axis": np.arange(4.0), "n": 3}, 3, (0, 3))
        record = cascade.next(timeout=5)
        assert (record.pulse_id, record.timestamp) == (3, (0, 3))
        assert np.array_equal(record.image, image) and cascade.channels(record)["n"] == 3
        assert [len(axis) for axis in cascade.axes(record)] == [4, 3]  # no y_axis: indices
        result = cascade.detach(
            {"image": record.image, "row": record.image[1], "own": image}, record
        )
        assert not any(np.may_share_memory(result[k], record.memory) for k in result)
        assert result["own"] is image and cascade.valid(record)
        for pulse_id in range(4, 4 + cascade.reader.slots):
            records.write({"image": image}, pulse_id, (0, pulse_id))
        assert not cascade.valid(record) and cascade.torn == 1  # its slot was written again
        records.follow(False)  # the last reader went: the ring stays, closed
        records.follow(True)  # a reader again: a new generation, which the cascade follows
        records.write({"n": 9}, 100, (0, 100))
        record = cascade.next(timeout=5)
        while record.pulse_id != 100:  # the rest of the closed generation first
            record = cascade.next(timeout=5)
        assert record.data == {"n": 9}
    finally:
        cascade.close()
        records.close()
        stats.close()
        remove_ring(base)


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
