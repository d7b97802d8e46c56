"""Pipeline types and inputs on a real supervisor: stream pipelines, cascades (input_pipeline,
input_stream), a second stream merged by pulse id, custom generators, create_header."""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest
from supervisor_harness import SIM_CAMERA, free_port_block, receive, wait_for

from shmcam.bsread import BsreadError, Encoder, Receiver, Sender

DOUBLE = b"""
def process(data, pulse_id, timestamp, parameters):
    return {"intensity": data["intensity"], "doubled": data["intensity"] * parameters["factor"]}
"""

COUNTER = b"""
def generate(parameters):
    for i in range(parameters["start"], parameters["start"] + 1000):
        yield {"value": i, "label": parameters["label"]}
"""


def upload(sup, name: str, source: bytes) -> None:
    sup.call("PUT", f"/api/v1/pipeline/script/{name}/script_bytes", data=source)


def create(sup, config: dict, expect: int = 200, **params) -> dict:
    return sup.call("POST", "/api/v1/pipeline", json=config, params=params, expect=expect)


def test_stream_pipeline_reads_an_upstream_pipeline(supervisor):
    """A cascade: a stream pipeline fed by a saved processing pipeline it starts itself."""
    sup = supervisor(
        cameras={"sim": SIM_CAMERA},
        pipelines={"beam": {"camera_name": "sim", "exclude": ["image"]}},
    )
    upload(sup, "double.py", DOUBLE)
    answer = create(
        sup,
        {"pipeline_type": "stream", "input_pipeline": "beam", "function": "double", "factor": 2},
    )
    upstream = sup.call("GET", "/api/v1/pipeline/instance/beam/info")["info"]
    assert upstream["is_stream_active"]
    messages = receive(answer["stream"], count=5)
    for message in messages:
        assert set(message.data) == {"intensity", "doubled", "processing_parameters"}
        assert message.data["doubled"] == 2 * message.data["intensity"] > 0
    ids = [m.pulse_id for m in messages]
    assert ids == sorted(ids) and len(set(ids)) == 5


def test_processing_pipeline_on_the_camera_stream(supervisor):
    """input_stream: the standard function on frames that arrive over bsread, with the
    stream's axes and the other channels handed over as bsdata."""
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    camera_stream = sup.call("GET", "/api/v1/cam/sim")["stream"]
    answer = create(
        sup, {"input_stream": camera_stream, "image_region_of_interest": [10, 100, 20, 50]}
    )
    message = receive(answer["stream"])[0]
    assert message.data["image"].shape == (50, 100)
    assert message.data["x_axis"].shape == (100,) and message.data["y_axis"].shape == (50,)
    assert message.data["intensity"] > 0
    stats = wait_for(
        lambda: (
            (
                i := sup.call("GET", f"/api/v1/pipeline/instance/{answer['instance_id']}/info")[
                    "info"
                ]["statistics"]
            )["frame_shape"]
            and i
        ),
        what="statistics",
    )
    assert stats["frame_size"] == [SIM_CAMERA["size_y"], SIM_CAMERA["size_x"]]
    assert stats["frame_shape"] == f"{SIM_CAMERA['size_x']}x{SIM_CAMERA['size_y']}x2"
    assert stats["header_changes"] == 1 and stats["errors"] == 0
    camera = wait_for(
        lambda: (
            (
                c := sup.call("GET", "/api/v1/cam/info")["info"]["active_instances"]["sim"][
                    "statistics"
                ]
            )["header_changes"]
            and c
        ),
        what="the camera's statistics",
    )
    assert camera["header_changes"] == 1 and camera["frame_shape"] == stats["frame_shape"]


def test_second_stream_is_merged_by_pulse_id(supervisor):
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    upload(
        sup,
        "both.py",
        b"""
def process(data, pulse_id, timestamp, parameters):
    return {"a": data["a"], "b": data["b"], "sum": data["a"] + data["b"]}
""",
    )
    port = free_port_block(2)
    with Sender(port, queue_size=1000) as first, Sender(port + 1, queue_size=1000) as second:
        answer = create(
            sup,
            {
                "pipeline_type": "stream",
                "function": "both",
                "input_stream": f"tcp://127.0.0.1:{port}",
                "input_stream2": f"tcp://127.0.0.1:{port + 1}",
            },
        )
        assert first.wait_for_clients(1, 10) and second.wait_for_clients(1, 10)
        with Receiver(answer["stream"], timeout=5) as client:
            # probes (ids below the real ones) until one comes through the pipeline: then
            # the whole path, subscriptions included, is in place
            for probe in range(1, 500):
                first.send({"a": probe}, probe, (1, 0))
                second.send({"b": -2 * probe}, probe, (1, 0))
                if client.receive(timeout=0.02) is not None:
                    break
            for pulse_id in range(1000, 1060):
                first.send({"a": pulse_id}, pulse_id, (1, 0))
                if pulse_id % 3 == 0:  # the second stream has every third id only
                    second.send({"b": -2 * pulse_id}, pulse_id, (1, 0))
                time.sleep(0.002)
            got = []
            while (message := client.receive(timeout=2)) is not None:
                got.append(message)
    got = [m for m in got if m.pulse_id >= 1000]  # late probes may still come first
    ids = [m.pulse_id for m in got]
    assert ids == [p for p in range(1000, 1060) if p % 3 == 0]
    assert all(m.data["a"] == m.pulse_id and m.data["sum"] == -m.pulse_id for m in got)


def test_custom_pipeline_generates_at_its_rate_and_ends_after_records(supervisor):
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    upload(sup, "counter.py", COUNTER)
    answer = create(
        sup,
        {
            "pipeline_type": "custom",
            "function": "counter",
            "start": 7,
            "label": "x",
            "max_frame_rate": 20,
            "records": 30,
            "no_client_timeout": 0,
        },
    )
    instance = answer["instance_id"]
    with Receiver(answer["stream"], timeout=5) as client:
        messages = [client.receive() for _ in range(3)]
    values = [m.data["value"] for m in messages]
    assert values == list(range(values[0], values[0] + 3)) and values[0] >= 7
    assert all(m.data["label"] == "x" for m in messages)
    gaps = np.diff([m.pulse_id for m in messages])
    assert (gaps >= 4).all(), gaps  # 20 Hz on a 100 Hz pulse-id clock
    done = wait_for(
        lambda: (
            (r := sup.call("GET", f"/api/v1/pipeline/instance/{instance}/exitcode"))["exitcode"]
            is not None
            and r
        ),
        what="the custom pipeline to end",
    )
    assert done["exitcode"] == 0 and done["finished"] == "30 records sent"


def test_custom_generator_that_ends_finishes_the_instance(supervisor):
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    upload(
        sup, "three.py", b"def generate(parameters):\n    yield from ({'n': i} for i in range(3))\n"
    )
    answer = create(
        sup,
        {
            "pipeline_type": "custom",
            "function": "three",
            "max_frame_rate": 50,
            "no_client_timeout": 0,
        },
    )
    done = wait_for(
        lambda: (
            (r := sup.call("GET", f"/api/v1/pipeline/instance/{answer['instance_id']}/exitcode"))[
                "exitcode"
            ]
            is not None
            and r
        ),
        what="the generator to end",
    )
    assert done["exitcode"] == 0 and done["finished"] == "the generator ended"


@pytest.mark.parametrize(
    "config, message",
    [
        ({"pipeline_type": "custom"}, "custom pipeline needs a function"),
        (
            {"pipeline_type": "stream", "function": "standard", "camera_name": "sim"},
            "is a built-in processing function",
        ),
        ({"input_stream": "localhost:9000"}, "input_stream must be a stream address"),
        ({"input_stream2": "tcp://h:1", "camera_name": "sim"}, "input_stream2 is merged"),
        ({"input_pipeline": "../up"}, "input_pipeline must be a pipeline name"),
        ({"input_pipeline": "up", "input_stream": "tcp://h:1"}, "not both"),
        ({"pipeline_type": "fanin"}, "a fanin needs input_stream"),
        ({"pipeline_type": "fanout", "camera_name": "sim", "function": "minimal"}, "no function"),
        ({"camera_name": "sim", "output_pipeline": "up", "output_stream": "tcp://h:1"}, "not both"),
        ({"input_mode": "PUSH", "camera_name": "sim"}, "input_mode must be one of SUB, PULL"),
        ({"create_header": "sometimes", "camera_name": "sim"}, "create_header must be one of"),
        ({"pipeline_type": "stream"}, "camera_name is required"),
        (
            {"pipeline_type": "store", "camera_name": "sim", "output_file": "../up.h5"},
            'output_file was the former store pipeline\'s; a pipeline writes HDF5 with "mode": '
            '"FILE"',
        ),
        (
            {"camera_name": "sim", "mode": "FILE", "file": "x.h5", "min_free_mb": -1},
            "min_free_mb must be",
        ),
        (
            {"pipeline_type": "store", "camera_name": "sim", "input_stream2": "tcp://h:2"},
            "input_stream2: a store pipeline (CamServer's DataBuffer feed) forwards its camera's",
        ),
    ],
)
def test_bad_input_configs_are_400(supervisor, config, message):
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    answer = create(sup, config, expect=400)
    assert message in answer["status"]
    assert sup.call("GET", "/api/v1/pipeline/info")["info"]["active_instances"] == {}


def test_cascade_to_itself_and_input_changes_are_refused(supervisor):
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    answer = create(sup, {"input_pipeline": "me"}, expect=400, instance_id="me")
    assert "input_pipeline makes a loop (me -> me)" in answer["status"]
    running = create(sup, {"camera_name": "sim"})["instance_id"]
    answer = sup.call(
        "POST",
        f"/api/v1/pipeline/instance/{running}/config",
        json={"input_stream": "tcp://127.0.0.1:1"},
        expect=400,
    )
    assert "input_stream cannot change on a running instance" in answer["status"]


def test_create_header_policies():
    once = Encoder(create_header="once")
    once.encode({"a": 1}, 1, (0, 0))
    with pytest.raises(BsreadError, match="create_header is 'once'"):
        once.encode({"a": 1, "b": 2.0}, 2, (0, 0))
    on_change, always = Encoder(), Encoder(create_header="always")
    first = on_change.encode({"a": 1}, 1, (0, 0))[1]
    assert on_change.encode({"a": 2}, 2, (0, 0))[1] is first  # header kept
    assert always.encode({"a": 2}, 2, (0, 0))[1] == first
    assert always.encode({"a": 3}, 3, (0, 0))[1] is not always.encode({"a": 3}, 4, (0, 0))[1]
    with pytest.raises(ValueError, match="create_header must be one of"):
        Encoder(create_header="never")


def test_collected_background_is_subtracted_by_a_pipeline(supervisor):
    """background collect -> an id that image_background takes: pixel for pixel, the image is
    the camera's minus the background rounded once, clipped at 0."""
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    background_id = sup.call(
        "POST", "/api/v1/pipeline/camera/sim/background", params={"n_images": 5}
    )["background_id"]
    stored = sup.call("GET", f"/api/v1/pipeline/background/{background_id}/image_bytes")
    background = np.frombuffer(
        base64.b64decode(stored["image"]["bytes"]), stored["image"]["dtype"]
    ).reshape(stored["image"]["shape"])
    plain = create(sup, {"camera_name": "sim", "no_client_timeout": 0})
    subtracted = create(
        sup,
        {
            "camera_name": "sim",
            "image_background_enable": True,
            "image_background": background_id,
            "no_client_timeout": 0,
        },
    )
    with Receiver(plain["stream"], timeout=5) as a, Receiver(subtracted["stream"], timeout=5) as b:
        raw = {m.pulse_id: m for m in (a.receive() for _ in range(20))}
        done = [m for m in (b.receive() for _ in range(20)) if m.pulse_id in raw]
    assert done, "the two pipelines shared no pulse id"
    for message in done:
        assert "processing_error" not in message.data["processing_parameters"]
        camera = raw[message.pulse_id].data["image"].astype(np.int64)
        expected = np.clip(camera - np.rint(background).astype(np.int64), 0, None)
        assert np.array_equal(message.data["image"], expected)
        assert message.data["intensity"] < raw[message.pulse_id].data["intensity"]


def test_stop_iteration_in_a_stream_function_is_an_error_not_the_end(supervisor):
    """Only a custom pipeline's exhausted generator ends an instance; a stream pipeline's
    failing frame is dropped and counted (CamServer's stream loop goes on: abort_on_error is
    false by default there)."""
    sup = supervisor(
        cameras={"sim": SIM_CAMERA},
        pipelines={"beam": {"camera_name": "sim", "exclude": ["image"]}},
    )
    upload(
        sup,
        "odd.py",
        b"""
calls = 0

def process(data, pulse_id, timestamp, parameters):
    global calls
    calls += 1
    if calls % 3 == 0:
        raise StopIteration("not a generator")
    return {"intensity": data["intensity"]}
""",
    )
    answer = create(sup, {"pipeline_type": "stream", "input_pipeline": "beam", "function": "odd"})
    messages = receive(answer["stream"], count=12)
    assert all("intensity" in m.data for m in messages)
    assert not any("processing_error" in m.data["processing_parameters"] for m in messages)
    path = f"/api/v1/pipeline/instance/{answer['instance_id']}/info"
    info = wait_for(  # 12 sent: 18 calls at least, 6 of them failed
        lambda: (i := sup.call("GET", path)["info"])["statistics"]["errors"] >= 6 and i,
        what="the failures counted",
    )
    assert info["is_stream_active"] and info["exit_code"] is None
    log = "\n".join(sup.log_lines(answer["instance_id"]))
    assert "StopIteration: not a generator" in log
