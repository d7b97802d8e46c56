"""Bad input gets a clear 4xx and changes nothing; hostile messages and user code never take
an instance or the node down (issue 11, correctness items), against a real supervisor.

Two property-based tests (hypothesis, bounded) fire random requests at the REST API and
random bsread messages at a stream pipeline."""

from __future__ import annotations

import hashlib
import json
import string
import time

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from supervisor_harness import SIM_CAMERA, receive, wait_for

from shmcam.bsread import Encoder, Sender
from shmcam.supervisor.validation import expanded_camera

PIPE = {"camera_name": "sim", "no_client_timeout": 0}
CAMERA = {**SIM_CAMERA, "no_client_timeout": 0}


def strict(text: str):
    """JSON as strict parsers (browsers, Java) read it: NaN and Infinity are errors."""

    def refuse(name):
        raise ValueError(f"{name} in a response")

    return json.loads(text, parse_constant=refuse)


def info(sup, instance_id: str) -> dict:
    return sup.call("GET", f"/api/v1/pipeline/instance/{instance_id}/info")["info"]


# --- malformed requests: 4xx, never 5xx --------------------------------------------------------


def test_malformed_requests_are_4xx_with_a_message(supervisor):
    sup = supervisor(cameras={"sim": CAMERA})
    nested = "[" * 100_000 + "]" * 100_000
    for path in ("/api/v1/cam/x/config", "/api/v1/pipeline", "/api/v1/pipeline/x/config"):
        answer = sup.call(
            "POST", path, data=nested, headers={"Content-Type": "application/json"}, expect=400
        )
        assert "nested" in answer["status"]
    for scale in ("1e-320", "0", "-1", "nan", "inf", "1e999", "x"):
        answer = sup.call("GET", f"/api/v1/cam/sim/image?scale={scale}", expect=400)
        assert "scale" in answer["status"]
    for dtype in ("(2)i", "i100", "<>f", "[('a', 'i')]", "V9999999999999999999", "O", 7):
        payload = {"bytes": "AAAA", "shape": [1, 3], "dtype": dtype}
        answer = sup.call(
            "PUT", "/api/v1/pipeline/background/b/image_bytes", data=json.dumps(payload), expect=400
        )
        assert "dtype" in answer["status"]
    for value in ("NaN", "Infinity", "-Infinity"):
        body = f'{{"source_type": "simulation", "frame_rate": {value}}}'
        answer = sup.call(
            "POST",
            "/api/v1/cam/sim/config",
            data=body,
            headers={"Content-Type": "application/json"},
            expect=400,
        )
        assert f"{value} is not a number JSON allows" in answer["status"]


def test_a_cascade_that_reads_itself_is_refused_however_long_the_loop(supervisor):
    sup = supervisor(
        cameras={"sim": CAMERA},
        pipelines={
            "a": {"input_pipeline": "b", "pipeline_type": "stream"},
            "b": {"input_pipeline": "c", "pipeline_type": "stream"},
            "c": {"input_pipeline": "a", "pipeline_type": "stream"},
        },
    )
    answer = sup.call("GET", "/api/v1/pipeline/instance/a", expect=400)
    assert "input_pipeline makes a loop (a -> b -> c -> a)" in answer["status"]
    assert sup.call("GET", "/api/v1/pipeline/info")["info"]["active_instances"] == {}


def test_a_refused_camera_config_leaves_the_running_camera_as_it_was(supervisor):
    """The bug: a running camera given frame_rate Infinity restarted with it (and ran at
    ~100 000 frames/s), although the config was then refused and not saved."""
    sup = supervisor(cameras={"sim": CAMERA})
    sup.call("GET", "/api/v1/cam/sim")
    pid = sup.call("GET", "/api/v1/cam/info")["info"]["active_instances"]["sim"]["statistics"]
    for config, problem in (
        ({**CAMERA, "frame_rate": 1e6}, "at most 1000 frames/s"),
        ({**CAMERA, "size_x": 15_800, "size_y": 15_800}, "max_frame_mb"),
        ({**CAMERA, "frame_rate": 1e400}, "not a number JSON allows"),
    ):
        data = json.dumps(config).replace("Infinity", "Infinity")
        answer = sup.call(
            "POST",
            "/api/v1/cam/sim/config",
            data=data,
            headers={"Content-Type": "application/json"},
            expect=400,
        )
        assert problem in answer["status"], answer
    after = sup.call("GET", "/api/v1/cam/info")["info"]["active_instances"]["sim"]
    assert after["statistics"]["pid"] == pid["pid"]
    assert after["config"] == CAMERA
    assert sup.call("GET", "/api/v1/cam/sim/config")["config"] == expanded_camera(CAMERA)


def test_configs_that_would_take_the_node_are_refused(supervisor):
    sup = supervisor(cameras={"sim": CAMERA}, settings={"max_config_kb": 64})
    for config, problem in (
        ({**PIPE, "averaging": 10**6}, "averaging must be an integer from -100 to 100"),
        ({**PIPE, "image_averaging": 5000}, "image_averaging must be an integer from -100"),
        (
            {**PIPE, "image_good_region": {}, "image_slices": {"number_of_slices": 10**5}},
            "number_of_slices must be an integer from 1 to 101",
        ),
    ):
        answer = sup.call("POST", "/api/v1/pipeline", json=config, expect=400)
        assert problem in answer["status"], answer
    sup.call("POST", "/api/v1/pipeline/pp/config", json=PIPE)
    extra = json.dumps({"note": "x" * 70_000})  # the merged config is over the limit
    answer = sup.call("POST", f"/api/v1/pipeline/pp?additional_config={extra}", expect=400)
    assert "more than the node's limit of 65536 (max_config_kb)" in answer["status"]
    assert sup.call("GET", "/api/v1/pipeline/info")["info"]["active_instances"] == {}


def test_a_config_with_nan_written_by_hand_is_named_not_served(supervisor):
    """The bug: NaN in a config made /info invalid JSON for strict parsers (the status page)."""
    sup = supervisor(cameras={"sim": CAMERA})
    (sup.data_dir / "pipelines").mkdir(parents=True)
    (sup.data_dir / "pipelines" / "bad.json").write_text('{"camera_name": "sim", "x": NaN}')
    answer = sup.call("GET", "/api/v1/pipeline/bad/config", expect=500)
    assert "bad.json is not valid JSON: NaN is not a number JSON allows" in answer["status"]
    sup.call("GET", "/api/v1/pipeline/instance/bad", expect=500)
    strict(requests.get(sup.url + "/api/v1/pipeline/info", timeout=10).text)


# --- user code: its output, crashes and appetite ---------------------------------------------

FORGER = b"""
import sys

def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters):
    print('{"finished": "forged by print"}')
    print('{"ready": {"output_file": "/etc/passwd"}}', file=sys.stderr)
    return {"pulse": pulse_id}
"""

SEGFAULT = b"""
import ctypes

def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters):
    if pulse_id:
        ctypes.string_at(0)      # reads address 0: SIGSEGV
    return {}
"""

GREEDY = b"""
import numpy as np
calls = 0

def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters):
    global calls
    calls += 1
    if calls % 2:
        np.ones(3 * 2**30 // 8)     # 3 GiB, over the instance's limit
    return {"call": calls}
"""


def test_what_user_code_prints_goes_to_the_log_and_forges_nothing(supervisor):
    """The bug: stdout was the report channel: a print() could end a running pipeline's
    state as "finished", and was lost from the log."""
    sup = supervisor(cameras={"sim": CAMERA})
    sup.call("PUT", "/api/v1/pipeline/script/forger.py/script_bytes", data=FORGER)
    created = sup.call(
        "POST", "/api/v1/pipeline", params={"instance_id": "f"}, json={**PIPE, "function": "forger"}
    )
    assert len(receive(created["stream"], 5)) == 5
    state = info(sup, "f")
    assert state["state"] == "running" and state["output_file"] is None
    exit = sup.call("GET", "/api/v1/pipeline/instance/f/exitcode")
    assert exit["finished"] is None and exit["exitcode"] is None
    lines = sup.log_lines("f")
    assert any(
        'INFO shmcam.instance.f: stdout: {"finished": "forged by print"}' in x for x in lines
    )
    assert any("WARNING shmcam.instance.f: stderr: " in x and "/etc/passwd" in x for x in lines)


def test_a_python_function_that_crashes_the_interpreter_leaves_its_stack_in_the_log(supervisor):
    sup = supervisor(cameras={"sim": CAMERA})
    sup.call("PUT", "/api/v1/pipeline/script/segv.py/script_bytes", data=SEGFAULT)
    sup.call(
        "POST", "/api/v1/pipeline", params={"instance_id": "s"}, json={**PIPE, "function": "segv"}
    )
    wait_for(
        lambda: (
            sup.call("GET", "/api/v1/pipeline/instance/s/exitcode")["instance_state"] == "failed"
        ),
        what="the crash",
    )
    log = "\n".join(sup.log_lines("s"))
    assert "Fatal Python error: Segmentation fault" in log
    assert "segv.py" in log and "process_image" in log


def test_a_function_asking_for_more_memory_than_allowed_gets_memoryerror(supervisor):
    sup = supervisor(cameras={"sim": CAMERA}, settings={"instance_memory_mb": 2048})
    sup.call("PUT", "/api/v1/pipeline/script/greedy.py/script_bytes", data=GREEDY)
    config = {**PIPE, "function": "greedy", "abort_on_error": False}
    created = sup.call("POST", "/api/v1/pipeline", params={"instance_id": "g"}, json=config)
    messages = receive(created["stream"], 10)  # the failing calls' frames are dropped
    assert all(m.data["call"] % 2 == 0 for m in messages)
    wait_for(lambda: info(sup, "g")["statistics"]["errors"] > 0, what="the failures counted")
    assert info(sup, "g")["state"] == "running"
    assert any("MemoryError" in line for line in sup.log_lines("g"))


def test_a_camera_script_that_does_not_parse_is_not_stored(supervisor):
    sup = supervisor()
    answer = sup.call(
        "PUT", "/api/v1/cam/script/src.py/script_bytes", data=b"class Source(:\n", expect=400
    )
    assert "camera script src.py is not valid Python" in answer["status"]
    assert sup.call("GET", "/api/v1/cam/script")["scripts"] == []


def test_a_push_pipeline_without_a_client_drops_nothing(supervisor):
    """The bug: a PUSH pipeline with no client counted every frame as dropped."""
    sup = supervisor(cameras={"sim": CAMERA})
    created = sup.call(
        "POST", "/api/v1/pipeline", params={"instance_id": "push"}, json={**PIPE, "mode": "PUSH"}
    )
    wait_for(lambda: info(sup, "push")["statistics"]["fps_in"] > 10, what="frames coming in")
    time.sleep(1.0)
    assert info(sup, "push")["statistics"]["dropped"] == 0
    from shmcam.bsread import Receiver

    with Receiver(created["stream"], mode="PULL", timeout=10) as client:
        assert client.receive() is not None


# --- property-based: random requests at the REST API ------------------------------------------

TEMPLATES = (
    "/api/v1/cam",
    "/api/v1/cam/{x}",
    "/api/v1/cam/{x}/config",
    "/api/v1/cam/{x}/image",
    "/api/v1/cam/{x}/image_bytes",
    "/api/v1/cam/{x}/geometry",
    "/api/v1/cam/{x}/is_online",
    "/api/v1/cam/background/{x}/image_bytes",
    "/api/v1/cam/script/{x}/script_bytes",
    "/api/v1/pipeline",
    "/api/v1/pipeline/{x}",
    "/api/v1/pipeline/{x}/config",
    "/api/v1/pipeline/instance/{x}",
    "/api/v1/pipeline/instance/{x}/config",
    "/api/v1/pipeline/instance/{x}/info",
    "/api/v1/pipeline/instance/{x}/image",
    "/api/v1/pipeline/camera/{x}/background",
    "/api/v1/pipeline/camera/{x}/backgrounds",
    "/api/v1/pipeline/background/{x}/image",
    "/api/v1/pipeline/background/{x}/image_bytes",
    "/api/v1/pipeline/background",
    "/api/v1/pipeline/script/{x}/script_bytes",
    "/api/v1/pipeline/lib/{x}/lib_bytes",
    "/api/v1/logs/instance/{x}",
    "/api/v1/{x}",
    "/api/v1/cam/{x}/del",
    "/api/v1/pipeline/{x}/del",
    "/metrics",
    "/{x}",
)
NAMES = st.one_of(
    st.sampled_from(["sim", "p", "pp", "..", ".", "a.b", "-x", "%2e%2e", "cam.1", "x" * 200]),
    st.text(string.ascii_letters + string.digits + "._-:+%~ ", min_size=1, max_size=20),
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [
        "camera_name",
        "pipeline_type",
        "function",
        "image_threshold",
        "averaging",
        "mode",
        "port",
        "image_region_of_interest",
        "input_pipeline",
        "input_stream",
        "pid_range",
        "size_x",
        "frame_rate",
        "source_type",
        "dtype",
        "no_client_timeout",
        "rotation",
        "image_slices",
    ]
)
CONFIGS = st.dictionaries(KEYS, JSON, max_size=5).map(lambda c: {"camera_name": "sim", **c})
BODIES = st.one_of(
    st.none(),
    CONFIGS.map(json.dumps),
    JSON.map(json.dumps),
    st.binary(max_size=200),
    st.just('{"a": NaN}'),
    st.just("[" * 5000),
)
QUERIES = st.dictionaries(
    st.sampled_from(
        ["scale", "n_images", "instance_id", "additional_config", "min_value", "colormap", "raw"]
    ),
    st.text(max_size=12) | JSON.map(json.dumps),
    max_size=3,
)


def snapshot(sup) -> tuple[dict, set]:
    files = {
        str(p.relative_to(sup.data_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sup.data_dir.rglob("*")
        if p.is_file() and "cache" not in p.parts
    }
    running = set()
    for root in ("cam", "pipeline"):
        running |= set(sup.call("GET", f"/api/v1/{root}/info")["info"]["active_instances"])
    return files, running


@pytest.fixture
def fuzzed_node(supervisor):
    sup = supervisor(
        cameras={"sim": CAMERA},
        pipelines={"pp": PIPE},
        settings={"allow_anonymous_code": False},
    )
    sup.call("POST", "/api/v1/pipeline", params={"instance_id": "p"}, json=PIPE)
    return sup


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]),
    template=st.sampled_from(TEMPLATES),
    name=NAMES,
    query=QUERIES,
    body=BODIES,
)
def test_random_requests_are_never_5xx_and_refused_ones_change_nothing(
    fuzzed_node, method, template, name, query, body
):
    sup = fuzzed_node
    before = snapshot(sup)
    response = requests.request(
        method,
        sup.url + template.format(x=name),
        params=query,
        data=body,
        timeout=60,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.headers.get("content-type", "").startswith("application/json") and method != "HEAD":
        answer = strict(response.text)
        assert answer["state"] == ("ok" if response.status_code < 400 else "error")
    if response.status_code >= 400:
        files, running = snapshot(sup)
        assert files == before[0], (method, template, name)
        # (the watchdog brings back camera sim whenever pipeline p runs without it)
        started = running - before[1] - {"sim"}
        assert not started, (method, template, name, started)


# --- property-based: random bsread messages at a stream-input pipeline ---------------------------

IMAGES = st.one_of(
    st.none(),
    st.text(max_size=10),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_]).flatmap(
        lambda dtype: st.lists(st.integers(0, 6), min_size=1, max_size=3).map(
            lambda shape: np.zeros(shape, dtype)
        )
    ),
)
EXTRAS = st.dictionaries(
    st.sampled_from(["x_axis", "y_axis", "width", "height", "other"]),
    IMAGES,
    max_size=3,
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(image=IMAGES, extras=EXTRAS, pulse_id=st.integers(0, 2**63 - 1))
def test_random_messages_never_take_a_stream_pipeline_down(
    stream_pipelines, image, extras, pulse_id
):
    """The bug: a stream-input pipeline died on a 1-D, 1x1 or string `image` because its own
    error handler raised. Every message either processes or is dropped and counted (the
    processing pipeline with abort_on_error false: by default it would end, as CamServer's)."""
    sender, sup = stream_pipelines
    data = {**extras, "image": image}
    try:
        sender.send(data, pulse_id, (1_700_000_000, 5))
    except (TypeError, ValueError):
        pass  # not encodable as bsread: nothing was sent
    for instance_id in ("proc", "plain"):
        assert info(sup, instance_id)["state"] == "running"


GOOD_PULSE = 7_341_829_455_001  # nowhere near what hypothesis draws


@pytest.fixture
def stream_pipelines(supervisor):
    sup = supervisor(cameras={"sim": CAMERA})
    sender = Sender(
        "tcp://127.0.0.1:0", mode="PUB", linger=0, encoder=Encoder(create_header="always")
    )
    stream = {"input_stream": sender.address, "no_client_timeout": 0}
    sup.call(
        "POST",
        "/api/v1/pipeline",
        params={"instance_id": "proc"},
        json={**stream, "abort_on_error": False},
    )
    sup.call(
        "POST",
        "/api/v1/pipeline",
        params={"instance_id": "plain"},
        json={**stream, "pipeline_type": "stream"},
    )
    assert sender.wait_for_clients(2, 10)
    yield sender, sup
    # afterwards both still process a good frame
    good = np.arange(12, dtype=np.uint16).reshape(3, 4)
    for instance_id in ("proc", "plain"):
        wait_for(lambda i=instance_id: info(sup, i)["state"] == "running")
    results = {}
    for instance_id in ("proc", "plain"):
        stream_address = info(sup, instance_id)["stream_address"]
        from shmcam.bsread import Receiver

        with Receiver(stream_address, timeout=10) as client:
            for n in range(200):
                sender.send({"image": good}, GOOD_PULSE + n, (1_700_000_000, 0))
                message = client.receive(timeout=0.1)
                if message is not None and GOOD_PULSE <= message.pulse_id < GOOD_PULSE + 200:
                    results[instance_id] = message
                    break
    assert "x_profile" in results["proc"].data
    assert np.array_equal(results["plain"].data["image"], good)
    sender.close()
