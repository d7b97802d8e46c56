"""Beam-synchronous data (CamServer's bsread_address, bsread_channels, §3.1) through a real
supervisor: camera frames joined with a bsread stream on equal pulse id (handed to the
function as bsdata), a stream pipeline reading bsread_address (CamServer's
stream_example.json), second streams merged by pulse id, and bsread_channels through a
stand-in for SwissFEL's dispatcher (tests/dispatcher.py)."""

from __future__ import annotations

import time

import pytest
from dispatcher import PulseStream, StandInDispatcher, value_of
from supervisor_harness import SIM_CAMERA, free_port_block, receive, wait_for

from shmcam.bsread import Receiver, Sender

CAMERA = {**SIM_CAMERA, "no_client_timeout": 0}  # 50 Hz: its frames have every other pulse id
CHANNELS = ("SARFE10-PBPG050:ENERGY", "SINEG01-DICT215:B1_CHARGE")
# CamServer's tests/user_scripts/stream_example.py, as its users wrote it
STREAM_EXAMPLE = b"""
from cam_server.pipeline.data_processing import functions


def process(stream_data, pulse_id, timestamp, parameters):
    stream_data["output"] = 10.0
    return stream_data
"""


def create(sup, config: dict, expect: int = 200, **params) -> dict:
    return sup.call("POST", "/api/v1/pipeline", json=config, params=params, expect=expect)


def info(sup, instance_id: str) -> dict:
    return sup.call("GET", f"/api/v1/pipeline/instance/{instance_id}/info")["info"]


@pytest.fixture
def pulses():
    """PulseStreams on bound PUSH sockets (what a bsread_address is): `pulses(lag=...)`
    gives (address, stream); all closed at the end."""
    opened: list[PulseStream] = []

    def start(lag: int = 0, mode: str = "PUSH", channels=CHANNELS):
        sender = Sender("tcp://127.0.0.1:0", mode=mode, queue_size=1000, linger=0)
        opened.append(PulseStream(sender, channels, lag))
        return sender.address

    yield start
    for stream in opened:
        stream.close()


@pytest.fixture
def dispatcher():
    stand_in = StandInDispatcher()
    yield stand_in
    stand_in.close()


def assert_joined(messages: list, channels=CHANNELS) -> None:
    for message in messages:
        for channel in channels:
            assert message.data[channel] == value_of(channel, message.pulse_id), message.pulse_id


def test_processing_pipeline_joins_frames_with_bsread_data(supervisor, pulses):
    """A frame goes to the function with the bsread data of its pulse id: `merge` adds it to
    the standard fields, the default function ignores it (CamServer's §4.4)."""
    sup = supervisor(cameras={"sim": CAMERA})
    joined = {"camera_name": "sim", "no_client_timeout": 0}  # a source each: PUSH deals out
    merged = create(
        sup, {**joined, "bsread_address": pulses(), "function": "merge"}, instance_id="merged"
    )
    plain = create(sup, {**joined, "bsread_address": pulses()}, instance_id="plain")
    messages = receive(merged["stream"], 10)
    assert_joined(messages)
    assert all("x_profile" in m.data and m.data["image"].shape == (240, 320) for m in messages)
    for message in receive(plain["stream"], 3):
        assert "x_profile" in message.data and not set(CHANNELS) & set(message.data)
    # (how fast the join goes is bench/ territory: a rate asserted here failed on loaded CI)
    assert info(sup, "merged")["statistics"]["errors"] == 0


def test_frames_wait_for_late_data_within_bsread_image_buf(supervisor, pulses):
    """Data 0.3 s after its frames: the frames wait (copied out of the ring) and go out
    joined; a buffer of 5 frames cannot wait that long: they are dropped, counted."""
    sup = supervisor(cameras={"sim": CAMERA})
    late = {"camera_name": "sim", "function": "merge"}
    waiting = create(sup, {**late, "bsread_address": pulses(lag=30)}, instance_id="waiting")
    short = create(
        sup,
        {**late, "bsread_address": pulses(lag=30), "bsread_image_buf": 5},
        instance_id="short",
    )
    messages = receive(waiting["stream"], 10)
    assert_joined(messages)
    assert [m.pulse_id for m in messages] == sorted(m.pulse_id for m in messages)
    with Receiver(short["stream"], timeout=2) as client:
        assert client.receive() is None
    wait_for(lambda: info(sup, "short")["statistics"]["dropped"] > 20, what="drops counted")
    assert short["instance_id"] == "short"


def test_camservers_stream_example_runs_unchanged(supervisor):
    """tests/pipeline_config/stream_example.json with its user script: a stream pipeline
    reading bsread_address (PULL from a PUSH source, CamServer's default)."""
    sup = supervisor()
    sup.call("PUT", "/api/v1/pipeline/script/stream_example.py/script_bytes", data=STREAM_EXAMPLE)
    port = free_port_block(1)
    stream_example = {
        "pipeline_type": "stream",
        "name": "stream1",
        "bsread_address": f"tcp://127.0.0.1:{port}",
        "bsread_channels": None,
        "mode": "PUB",
        "function": "stream_example",
    }
    with Sender(port, mode="PUSH", queue_size=1000) as source:
        answer = create(sup, stream_example)
        with Receiver(answer["stream"], timeout=0.1) as client:
            got, pulse_id, deadline = [], 100, time.monotonic() + 20
            while len(got) < 5 and time.monotonic() < deadline:
                source.send({"SIGNAL": pulse_id * 2.0, "LABEL": "x"}, pulse_id, (1, pulse_id))
                pulse_id += 1
                if (message := client.receive()) is not None:
                    got.append(message)
    assert len(got) == 5
    for message in got:
        assert message.data["output"] == 10.0 and message.data["LABEL"] == "x"
        assert message.data["SIGNAL"] == message.pulse_id * 2.0


def test_second_streams_merge_by_pulse_id(supervisor, pulses):
    """input_pipeline2 (a pipeline of the node, started for it) and bsread_address2 (PULL
    from a PUSH source; input_mode2 chooses), merged into a camera stream pipeline."""
    sup = supervisor(
        cameras={"sim": CAMERA},
        pipelines={"beam": {"camera_name": "sim", "include": ["intensity"]}},
    )
    camera = {"pipeline_type": "stream", "camera_name": "sim", "no_client_timeout": 0}
    with_beam = create(sup, {**camera, "input_pipeline2": "beam", "merge_buffer_size": 50})
    messages = receive(with_beam["stream"], 5)
    assert all(m.data["intensity"] > 0 and m.data["image"].shape == (240, 320) for m in messages)
    assert info(sup, "beam")["is_stream_active"]  # started for it
    with_data = create(sup, {**camera, "bsread_address2": pulses()})
    messages = receive(with_data["stream"], 5)
    assert_joined(messages)
    assert all(m.data["image"].shape == (240, 320) for m in messages)
    subscribed = create(
        sup, {**camera, "bsread_address2": pulses(mode="PUB"), "input_mode2": "SUB"}
    )
    assert_joined(receive(subscribed["stream"], 3))


def test_bsread_channels_through_the_dispatcher(supervisor, dispatcher):
    """bsread_channels without an address: the instance asks the dispatcher (here a stand-in)
    for a stream of them, in bsread's REST protocol, reads it, and releases it when it
    stops."""
    sup = supervisor(cameras={"sim": CAMERA}, settings={"dispatcher_urls": [dispatcher.url]})
    channels = [CHANNELS[0], {"name": CHANNELS[1], "modulo": 1, "offset": 0}]
    answer = create(
        sup,
        {"pipeline_type": "stream", "bsread_channels": channels, "dispatcher_url": dispatcher.url},
        instance_id="bs",
    )
    assert_joined(receive(answer["stream"], 5))
    assert dispatcher.requests == [
        {
            "channels": [{"name": CHANNELS[0]}, {"name": CHANNELS[1], "modulo": 1, "offset": 0}],
            "streamType": "pub_sub",
            "verify": True,
            "channelValidation": {"inconsistency": "adjust-individual"},
        }
    ]
    address = next(iter(dispatcher.streams))
    sup.call("DELETE", "/api/v1/pipeline/bs")
    wait_for(lambda: dispatcher.removed == [address], what="the stream released")

    joined = create(
        sup,
        {
            "camera_name": "sim",
            "function": "merge",
            "bsread_channels": list(CHANNELS),
            "bsread_mode": "PULL",
            "dispatcher_url": dispatcher.url + "/",
            "dispatcher_verify_request": False,
            "dispatcher_disable_compression": True,
        },
    )
    assert_joined(receive(joined["stream"], 5))
    assert dispatcher.requests[-1] == {
        "channels": [{"name": CHANNELS[0]}, {"name": CHANNELS[1]}],
        "streamType": "push_pull",
        "verify": False,
        "channelValidation": {"inconsistency": "keep-as-is"},
        "compression": "none",
    }
    dispatcher.refuse = True
    refused = create(
        sup,
        {"pipeline_type": "stream", "bsread_channels": ["X"], "dispatcher_url": dispatcher.url},
        expect=400,
    )
    assert "HTTP 500" in refused["status"] and "channel BS:NOPE unknown" in refused["status"]
