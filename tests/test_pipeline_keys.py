"""CamServer's pipeline keys (docs/spec/camserver.md §3.1) through a real supervisor, in
CamServer's config shapes, each stream checked by a bsread client: the DataBuffer feed
(`pipeline_type: store`), `block`, `buffer_size`, `include`, `create_header`, `allow_*`,
`output_stream`/`output_pipeline`, `pid_range`, `enforce_timestamp`, `check_timestamp`,
`abort_on_timeout`, `camera_timeout`, `debug`; and the parser's refusals."""

from __future__ import annotations

import time

import numpy as np
import pytest
from supervisor_harness import SIM_CAMERA, counted, free_port_block, receive, wait_for

from shmcam.bsread import Receiver, Sender
from shmcam.workers import pipeline_keys
from shmcam.workers.gate import Gate

COUNTER = b"""
import numpy as np

def generate(parameters):
    i = 0
    while True:
        yield {"value": i, "blob": np.zeros(parameters.get("blob", 1))}
        i += 1
"""


# a custom pipeline numbering its messages (`value`), on a PUSH stream of a 1-message queue
PUSH_COUNTER = {
    "pipeline_type": "custom",
    "function": "counter",
    "mode": "PUSH",
    "queue_size": 1,
    "no_client_timeout": 0,
}


def upload(sup, name: str, source: bytes) -> None:
    sup.call("PUT", f"/api/v1/pipeline/script/{name}/script_bytes", data=source)


def create(sup, config: dict, expect: int = 200, **params) -> dict:
    return sup.call("POST", "/api/v1/pipeline", json=config, params=params, expect=expect)


def info(sup, instance_id: str) -> dict:
    return sup.call("GET", f"/api/v1/pipeline/instance/{instance_id}/info")["info"]


def ended(sup, instance_id: str) -> dict:
    """The exit report, once the instance ended."""
    return wait_for(lambda: sup.ended(instance_id), what=f"{instance_id} to end")


# --- the DataBuffer feed ---------------------------------------------------------------------


def test_store_pipeline_is_camservers_databuffer_feed(supervisor):
    """CamServer's store_simulation.json shape: a non-blocking PUSH of the camera's image
    as the single channel <camera>:FPICTURE; `modulo` keeps 1 of N. Without a client it
    sends nothing and drops nothing."""
    sup = supervisor(cameras={"simulation": SIM_CAMERA})  # 50 Hz: pulse ids step by 2
    feed = create(sup, {"camera_name": "simulation", "pipeline_type": "store"}, instance_id="feed")
    every3 = create(
        sup,
        {"camera_name": "simulation", "pipeline_type": "store", "modulo": 3},
        instance_id="every3",
    )
    wait_for(lambda: info(sup, "feed")["statistics"]["fps_in"] > 20, what="frames in")
    idle = info(sup, "feed")["statistics"]
    assert idle["fps_out"] == 0 and idle["dropped"] == 0 and idle["clients"] == 0
    with Receiver(feed["stream"], mode="PULL", timeout=5) as client:
        messages = [client.receive() for _ in range(5)]
    assert all(list(m.data) == ["simulation:FPICTURE"] for m in messages)
    assert all(m.data["simulation:FPICTURE"].shape == (240, 320) for m in messages)
    assert all(m.data["simulation:FPICTURE"].dtype == np.uint16 for m in messages)
    with Receiver(every3["stream"], mode="PULL", timeout=5) as client:
        ids = [client.receive().pulse_id for _ in range(4)]
    assert set(np.diff(ids)) == {6}, ids  # 1 of 3 frames, 2 pulse ids apart
    for config, message in (
        ({"function": "transparent"}, "function: a store pipeline (CamServer's DataBuffer"),
        ({"mode": "PUB"}, "a store pipeline is CamServer's DataBuffer feed, a PUSH stream"),
        ({"block": True}, "block: a store pipeline (DataBuffer feed) never blocks"),
        ({"input_stream": "tcp://h:1"}, "input_stream: a store pipeline"),
    ):
        store = {"camera_name": "simulation", "pipeline_type": "store", **config}
        assert message in create(sup, store, expect=400)["status"]
    refused = create(sup, {"camera_name": "simulation", "modulo": 2}, expect=400)
    assert "modulo is the store pipeline's (DataBuffer feed); use downsampling" in refused["status"]


# --- sending -----------------------------------------------------------------------------------


def values_read_slowly(stream: str, count: int) -> list[int]:
    """`count` values read by a client that takes 30 ms per message and holds one."""
    with Receiver(stream, mode="PULL", queue_size=1, timeout=5) as client:
        values = []
        for _ in range(count):
            message = client.receive()
            assert message is not None, "the stream went silent"
            values.append(int(message.data["value"]))
            time.sleep(0.03)
        return values


def test_block_waits_for_a_slow_push_client_and_false_drops(supervisor):
    """block (default true, as CamServer's code): a PUSH stream waits for its slow client
    (up to shmcam's bounded SEND_TIMEOUT); block false drops what the client cannot take."""
    sup = supervisor()
    upload(sup, "counter.py", COUNTER)
    # 4 MB messages: the kernel's socket buffers hold only a few
    custom = {**PUSH_COUNTER, "max_frame_rate": 100, "blob": 500_000}
    blocking = create(sup, custom)
    dropping = create(sup, {**custom, "block": False})
    values = values_read_slowly(blocking["stream"], 15)
    assert np.diff(values).tolist() == [1] * 14, values
    values = values_read_slowly(dropping["stream"], 15)
    assert max(np.diff(values)) > 1, values
    instance = dropping["instance_id"]
    wait_for(lambda: info(sup, instance)["statistics"]["dropped"] > 0, what="drops counted")


def test_buffer_size_keeps_messages_for_a_push_client_connecting_late(supervisor):
    """CamServer's test_buffered_pipeline: PUSH, queue_size 1, buffer_size: what was produced
    before the client connected arrives; without a buffer a PUSH stream sends nothing while
    no client is there."""
    sup = supervisor()
    upload(sup, "counter.py", COUNTER)
    custom = {**PUSH_COUNTER, "max_frame_rate": 20}
    buffered = create(sup, {**custom, "buffer_size": 100})
    plain = create(sup, custom)
    for answer in (buffered, plain):  # 30 messages produced, no client yet
        instance = answer["instance_id"]
        wait_for(lambda i=instance: counted(sup.call, i, "rx") >= 30, what="30 messages made")
    for answer, first in ((buffered, 0), (plain, 25)):
        with Receiver(answer["stream"], mode="PULL", timeout=5) as client:
            values = [int(client.receive().data["value"]) for _ in range(5)]
        if first:
            assert values[0] >= first, values  # the ones before the client are gone
        else:
            assert values == [0, 1, 2, 3, 4], values


PARITY = b"""
import numpy as np

def process(data, pulse_id, timestamp, parameters):
    n = int(data["n"])
    result = {"n": n, "always": 1}
    if n % 2 == 0:
        result["even"] = n
    result["kind"] = n if n % 3 else float(n)        # an int, every third a float
    result["row"] = np.zeros(1 + (n % 4 == 0))       # one element, every fourth two
    return result
"""


def stream_pipeline_on(sup, config: dict, count: int, function="parity") -> list:
    """A stream pipeline on a stream this test sends ({"n": n} at pulse id n), `count`
    results received back."""
    port = free_port_block(1)
    with Sender(port, queue_size=1000) as sender:
        answer = create(
            sup,
            {
                "pipeline_type": "stream",
                "function": function,
                "input_stream": f"tcp://127.0.0.1:{port}",
                **config,
            },
        )
        assert sender.wait_for_clients(1, 10)
        got = []
        with Receiver(answer["stream"], timeout=5) as client:
            n, deadline = 1, time.monotonic() + 30
            while len(got) < count and time.monotonic() < deadline:
                sender.send({"n": n}, n, (1_700_000_000, n))
                n += 1
                message = client.receive(timeout=0.02)
                if message is not None:
                    got.append(message)
    assert len(got) == count
    return got, answer["instance_id"]


def test_include_fills_absent_channels_with_none(supervisor):
    """CamServer's include: a channel the result lacks goes out as None, so the stream keeps
    one header (once the channel had a value); without include the channel set changes."""
    sup = supervisor()
    upload(sup, "parity.py", PARITY)
    got, instance = stream_pipeline_on(sup, {"include": ["n", "even", "nowhere"]}, 12)
    assert all(list(m.data) == ["n", "even"] for m in got[2:])  # "nowhere" never had a value
    assert all(m.data["even"] == (m.data["n"] if m.data["n"] % 2 == 0 else None) for m in got[2:])
    wait_for(lambda: info(sup, instance)["statistics"]["header_changes"] == 2, what="headers")
    plain, instance = stream_pipeline_on(sup, {"exclude": ["kind", "row"]}, 12)
    wait_for(lambda: info(sup, instance)["statistics"]["header_changes"] >= 10, what="headers")
    assert {"even" in m.data for m in plain} == {True, False}


def test_allow_type_and_shape_changes_false_send_none(supervisor):
    """allow_type_changes / allow_shape_changes false: a channel whose type (int/float) or
    shape changed from its first value's goes out as None."""
    sup = supervisor()
    upload(sup, "parity.py", PARITY)
    got, _ = stream_pipeline_on(
        sup, {"allow_type_changes": False, "allow_shape_changes": False}, 12
    )
    for message in got:
        n = message.data["n"]
        assert message.data["kind"] == (None if n % 3 == 0 else n), n
        row = message.data["row"]  # one element: a scalar once decoded
        assert row is None if n % 4 == 0 else row.shape == (), n
    got, _ = stream_pipeline_on(sup, {}, 12)  # default: allowed
    assert all(np.shape(m.data["row"]) == ((2,) if m.data["n"] % 4 == 0 else ()) for m in got)


def test_create_header_booleans(supervisor):
    """CamServer's create_header true (always) and false (once): once refuses a message of
    another format (counted, not sent) instead of changing the stream's header."""
    sup = supervisor()
    upload(sup, "parity.py", PARITY)
    once, instance = stream_pipeline_on(
        sup, {"create_header": False, "exclude": ["kind", "row"]}, 5
    )
    assert len({tuple(m.data) for m in once}) == 1  # the first message's format only
    wait_for(lambda: info(sup, instance)["statistics"]["errors"] > 0, what="refused formats")
    always, _ = stream_pipeline_on(sup, {"create_header": True, "include": ["n"]}, 5)
    assert [m.data["n"] for m in always] == sorted(m.data["n"] for m in always)
    assert pipeline_keys.output({"create_header": True}).create_header == "always"
    assert pipeline_keys.output({"create_header": False}).create_header == "once"


def test_output_stream_and_output_pipeline_connect_the_sender(supervisor):
    """The sender connects to output_stream (or to the input_stream of the pipeline config
    output_pipeline names, CamServer's fan-in wiring) instead of binding its port."""
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    port = free_port_block(2)
    sup.call(
        "POST",
        "/api/v1/pipeline/sink/config",
        json={
            "pipeline_type": "stream",
            "input_stream": f"tcp://127.0.0.1:{port + 1}",
            "input_mode": "PULL",
        },
    )
    beam = {"camera_name": "sim", "mode": "PUSH", "include": ["intensity"], "no_client_timeout": 0}
    create(sup, {**beam, "output_stream": f"tcp://127.0.0.1:{port}"}, instance_id="direct")
    create(sup, {**beam, "output_pipeline": "sink"}, instance_id="wired")
    for offset in (0, 1):
        with Receiver(f"tcp://*:{port + offset}", mode="PULL", bind=True, timeout=5) as fanin:
            messages = [fanin.receive() for _ in range(3)]
        assert all(m is not None and list(m.data) == ["intensity"] for m in messages)
    refused = create(sup, {**beam, "output_pipeline": "nowhere"}, expect=404)
    assert "'nowhere'" in refused["status"]


# --- flow control ------------------------------------------------------------------------------


def test_gate_keys():
    ids = list(range(100, 110))

    def admitted(config, frames):
        gate = Gate(config)
        return [pid for pid, stamp in frames if gate.admit(pid, stamp)]

    frames = [(p, (1, p)) for p in ids]
    assert admitted({"pid_range": [0, 105]}, frames) == []  # start <= 0: nothing passes
    assert Gate({"pid_range": [0, 105]}).passed(200) is None  # and nothing ends the run
    assert Gate({"pid_range": [1, 0]}).passed(200) is None  # a stop <= 0 is no end
    assert admitted({"pid_range": [-5, None]}, frames) == []
    stamps = [(100, (5, 0)), (101, (5, 0)), (102, (4, 9)), (103, (5, 1))]
    assert admitted({"enforce_timestamp": True}, stamps) == [100, 103]
    checked = [(1_000_123, (7, 55_000_123)), (1_000_124, (7, 55_000_999))]
    assert admitted({"check_timestamp": True}, checked) == [1_000_123]
    assert admitted({"pipeline_type": "store", "modulo": 4}, frames) == [103, 107]
    assert admitted({"pipeline_type": "store", "module": 5}, frames) == [104, 109]


def test_pid_range_start_zero_holds_everything_until_updated(supervisor):
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    answer = create(
        sup,
        {"camera_name": "sim", "pid_range": [0, 0], "include": ["intensity"]},
        instance_id="held",
    )
    wait_for(lambda: info(sup, "held")["statistics"]["fps_in"] > 20, what="frames in")
    with Receiver(answer["stream"], timeout=1.0) as client:
        assert client.receive() is None
    sup.call("POST", "/api/v1/pipeline/instance/held/config", json={"pid_range": [1, 0]})
    assert receive(answer["stream"], 3)


def test_timestamp_keys_on_a_stream(supervisor):
    """enforce_timestamp drops a message not later than the last; check_timestamp one whose
    pulse id and nanoseconds disagree in their last 6 digits (SwissFEL's timing)."""
    sup = supervisor()
    port = free_port_block(1)
    config = {
        "pipeline_type": "stream",
        "input_stream": f"tcp://127.0.0.1:{port}",
        "enforce_timestamp": True,
        "check_timestamp": True,
    }
    with Sender(port, queue_size=1000) as sender:
        answer = create(sup, config)
        assert sender.wait_for_clients(1, 10)
        with Receiver(answer["stream"], timeout=3) as client:
            for probe in range(1, 300):  # until the path is up (subscriptions)
                sender.send({"n": probe}, probe, (1, probe))
                if client.receive(timeout=0.02) is not None:
                    break
            base = 1_000_000_000
            sent = [
                (base + 1, (10, 2_000_000 + 1)),  # ok
                (base + 2, (10, 2_000_000 + 2)),  # ok
                (base + 3, (10, 2_000_000 + 2)),  # check_timestamp: 3 != 2
                (base + 4, (9, 9_000_004)),  # enforce_timestamp: earlier
                (base + 5, (11, 5)),  # ok
            ]
            for pid, stamp in sent:
                sender.send({"n": pid}, pid, stamp)
            got = []
            while (message := client.receive(timeout=1)) is not None:
                got.append(message.pulse_id)
    assert [p for p in got if p > base] == [base + 1, base + 2, base + 5]


# --- errors and timeouts -----------------------------------------------------------------------


def test_abort_on_timeout_ends_a_silent_pipeline_and_camera_timeout_reconnects(supervisor):
    sup = supervisor()
    port = free_port_block(1)
    stream = {"pipeline_type": "stream", "input_stream": f"tcp://127.0.0.1:{port}"}
    with Sender(port) as sender:
        create(
            sup,
            {**stream, "abort_on_timeout": True, "stream_timeout": 1.5, "camera_timeout": 0},
            instance_id="strict",
        )
        create(sup, {**stream, "camera_timeout": 1}, instance_id="patient")
        assert sender.wait_for_clients(2, 10)
        sender.send({"n": 1}, 1, (1, 0))
        report = ended(sup, "strict")
    assert report["exitcode"] == 1
    assert "no frame for 1.5 s (stream_timeout, abort_on_timeout)" in report["last_error"]
    wait_for(
        lambda: any("(camera_timeout): reconnecting" in line for line in sup.log_lines("patient")),
        what="the reconnection",
    )
    with Sender(port) as sender:  # the source back: the reconnected pipeline reads it
        answer = sup.call("GET", "/api/v1/pipeline/instance/patient")
        with Receiver(answer["stream"], timeout=0.2) as client:
            deadline = time.monotonic() + 20
            while (message := client.receive()) is None:
                assert time.monotonic() < deadline, "no frame after the source came back"
                sender.send({"n": 2}, 2, (1, 0))
        assert message.data["n"] == 2
    assert info(sup, "patient")["is_stream_active"]


def test_debug_logs_unexpected_pulse_ids(supervisor):
    sup = supervisor()
    port = free_port_block(1)
    with Sender(port, queue_size=1000) as sender:
        answer = create(
            sup,
            {"pipeline_type": "stream", "input_stream": f"tcp://127.0.0.1:{port}", "debug": True},
        )
        assert sender.wait_for_clients(1, 10)
        with Receiver(answer["stream"], timeout=3) as client:
            for pid in range(10, 400, 2):  # until the path is up (subscriptions)
                sender.send({"n": pid}, pid, (1, 0))
                if client.receive(timeout=0.02) is not None:
                    break
        for pid in (1000, 1002, 1004, 1010, 1012):
            sender.send({"n": pid}, pid, (1, 0))
        wait_for(
            lambda: any(
                "Unexpected PID: 1010 - previous: 1002, 1004" in line
                for line in sup.log_lines(answer["instance_id"])
            ),
            what="the debug line",
        )


@pytest.mark.parametrize(
    "config, message",
    [
        ({"mode": "FILE"}, "File name not defined"),
        ({"mode": "pub"}, "mode must be one of PUB, PUSH, FILE"),
        ({"block": "yes"}, "block must be true or false"),
        ({"buffer_size": 0}, "buffer_size must be a positive integer"),
        ({"queue_size": -1}, "queue_size must be a positive integer"),
        ({"output_stream": "nowhere"}, "output_stream must be a stream address"),
        ({"output_stream": "tcp://h:1", "output_pipeline": "x"}, "not both"),
        ({"mode": "FILE", "file": "a.h5", "output_stream": "tcp://h:1"}, "not FILE mode"),
        ({"mode": "FILE", "file": "a.h5", "layout": "NEW"}, "layout must be one of"),
        ({"mode": "FILE", "file": "a.h5", "layout": "BSH5", "change": True}, "change: layout"),
        ({"mode": "FILE", "file": "a.h5", "data_compression": "lz4"}, "no HDF5 chunk format"),
        ({"create_header": 1}, "create_header must be one of"),
        ({"allow_type_changes": None, "allow_shape_changes": 0}, "allow_shape_changes must be"),
        ({"include": "image"}, "include must be a list of channel names"),
        ({"pid_range": [1]}, "pid_range must be [start, stop] pulse ids"),
        ({"enforce_timestamp": 1}, "enforce_timestamp must be true or false"),
        ({"abort_on_error": "no"}, "abort_on_error must be true or false"),
        ({"stream_timeout": 0}, "stream_timeout must be seconds (> 0)"),
        ({"camera_timeout": "10"}, "camera_timeout must be seconds"),
        ({"receive_timeout": 0}, "receive_timeout must be milliseconds"),
        ({"timeout_count": -1}, "timeout_count must be a positive integer"),
        ({"debug": "on"}, "debug must be true or false"),
        ({"read_only": 1}, "read_only must be true or false"),
        ({"bsread_address": "h:1"}, "bsread_address must be a stream address"),
        ({"bsread_channels": "[1]"}, "bsread_channels must be a list of channel names"),
        ({"bsread_channels": ["A"], "bsread_mode": "PUSH"}, "bsread_mode must be one of"),
        ({"bsread_address": "tcp://h:1", "bsread_image_buf": 0}, "bsread_image_buf must be"),
        ({"dispatcher_url": "ftp://x", "bsread_channels": ["A"]}, "dispatcher_url must be"),
        (
            {"bsread_channels": ["A"], "dispatcher_url": "http://elsewhere:1"},
            "dispatcher_url 'http://elsewhere:1' is not one of the node's dispatcher_urls",
        ),
        ({"input_stream2": "tcp://h:2", "bsread_address2": "tcp://h:3"}, "one second stream"),
        (
            {"pipeline_type": "stream", "bsread_address": "tcp://h:3"},
            "give input_stream (or input_pipeline) or bsread_address, not both",
        ),
        ({"merge_buffer_size": 0, "input_stream2": "tcp://h:2"}, "merge_buffer_size must be"),
    ],
)
def test_bad_pipeline_keys_are_400(supervisor, config, message):
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    answer = create(sup, {"camera_name": "sim", "input_stream": "tcp://h:9", **config}, 400)
    assert message in answer["status"], answer["status"]
    assert sup.call("GET", "/api/v1/pipeline/info")["info"]["active_instances"] == {}


def test_a_file_mode_pipeline_is_never_idle(supervisor):
    """It writes a file, no client reads it: no_client_timeout does not stop it."""
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    config = {"camera_name": "sim", "mode": "FILE", "file": "{time}.h5", "no_client_timeout": 1}
    create(sup, config, instance_id="writer")
    time.sleep(2.5)  # the watchdog would have stopped a stream without clients by now
    assert info(sup, "writer")["is_stream_active"]
    assert info(sup, "writer")["statistics"]["fps_out"] > 20


def test_keys_read_at_start_cannot_change_on_a_running_instance(supervisor):
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    create(sup, {"camera_name": "sim", "no_client_timeout": 0}, instance_id="x")
    path = "/api/v1/pipeline/instance/x/config"
    for update in (
        {"mode": "PUSH"},
        {"block": False},
        {"buffer_size": 10},
        {"bsread_address": "tcp://h:1"},
        {"output_stream": "tcp://h:1"},
    ):
        refused = sup.call("POST", path, json=update, expect=400)
        assert f"{next(iter(update))} cannot change on a running instance" in refused["status"]
    same = {"mode": "PUB", "block": True, "queue_size": 10, "create_header": "on_change"}
    sup.call("POST", path, json=same)  # their values in force: accepted
    live = {"debug": True, "camera_timeout": 5, "allow_type_changes": False, "read_only": True}
    sup.call("POST", path, json=live)
    refused = sup.call("POST", path, json={"debug": False}, expect=409)
    assert "Cannot set config on a read only instance." in refused["status"]
