"""Hostile bsread input to a real camera process (issue 11, item 8): mutated messages, each
followed by a good one. The camera never dies, every bad message is counted as an error, every
other one is written, and the good ones keep coming through, poison or not."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from supervisor_harness import wait_for

from shmcam.bsread import Encoder

SENTINEL_BASE = 10**15  # pulse ids of the good messages; mutated ones rarely land here
INTS = st.one_of(
    st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**9, 10**9 - 1]),
    st.integers(-(2**70), 2**70),
)
ODD = st.one_of(st.none(), st.floats(), st.text(max_size=4), st.booleans(), st.lists(st.integers()))
TYPES = st.sampled_from(
    ["uint16", "uint8", "int64", "float64", "float32", "bool", "string", "float16", "x", ""]
)
COMPRESSIONS = st.sampled_from([None, "none", "lz4", "bitshuffle_lz4", "zip"])
NAMES = st.sampled_from(["image", "width", "height", "x_axis", "y_axis", "other"])


def main_header(hash_: str, pulse_id, sec, ns) -> bytes:
    return json.dumps(
        {"htype": "bsr_m-1.1", "hash": hash_, "pulse_id": pulse_id,
         "global_timestamp": {"sec": sec, "ns": ns}}
    ).encode()  # fmt: skip


@st.composite
def foreign_values(draw):
    """A well-formed message with one hostile value: a pulse id or a timestamp of any size, or
    an image of any type and dimensions, perhaps with lying width and height."""
    hostile = draw(st.sampled_from(["pulse_id", "timestamp", "image"]))
    image = np.zeros((3, 5), np.uint16)
    if hostile == "image":
        image = draw(
            hnp.arrays(
                dtype=st.sampled_from(["<u2", "u1", "<i8", "<f4", "<f8", "?", "<u8"]),
                shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=6),
            )
        )
    data = {"image": image}
    if hostile == "image" and draw(st.booleans()):
        data["width"] = draw(st.integers(-5, 2**62))
        data["height"] = draw(st.integers(-5, 2**62))
    parts = Encoder().encode(data, 0, (0, 0))
    pulse_id = draw(st.one_of(INTS, ODD)) if hostile == "pulse_id" else draw(st.integers(0, 10**12))
    sec, ns = draw(st.tuples(INTS, INTS)) if hostile == "timestamp" else (1, 2)
    return [main_header(json.loads(parts[0])["hash"], pulse_id, sec, ns), *parts[1:]]


@st.composite
def foreign_headers(draw):
    """A data header of hostile channel entries over random payload parts."""
    channels = draw(
        st.lists(
            st.fixed_dictionaries(
                {"name": NAMES, "type": TYPES, "compression": COMPRESSIONS},
                optional={"shape": st.one_of(st.lists(st.integers(-2, 10**7), max_size=3), ODD)},
            ),
            max_size=4,
        )
    )
    header = json.dumps({"htype": "bsr_d-1.1", "channels": channels}).encode()
    hash_ = hashlib.md5(header).hexdigest()
    payload = draw(st.lists(st.binary(max_size=64), max_size=2 * len(channels)))
    return [main_header(hash_, draw(INTS), 1, 0), header, *payload]


RAW = st.lists(st.binary(max_size=80), min_size=1, max_size=5)
MESSAGES = st.one_of(foreign_values(), foreign_headers(), RAW)


@pytest.mark.timeout(300)
def test_mutated_bsread_messages_never_stop_a_camera(cameras):
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.sndtimeo = 5000
    port = push.bind_to_random_port("tcp://127.0.0.1")
    sentinels = Encoder()
    sent = {"bad": 0, "good": 0}
    try:
        camera = cameras({"source_type": "bschannel", "source": f"tcp://127.0.0.1:{port}",
                          "mode": "PULL"})  # fmt: skip

        def send_good() -> int:
            pulse_id = SENTINEL_BASE + sent["good"]
            image = np.full((4, 6), sent["good"] % 60000, np.uint16)
            push.send_multipart(sentinels.encode({"image": image}, pulse_id, (1, 2)))
            sent["good"] += 1
            return pulse_id

        send_good()  # the camera creates its ring with its first frame
        reader = camera.reader(timeout=30)

        def good() -> None:
            """A good message, waited for in the ring: the camera is alive and writing."""
            pulse_id = send_good()
            while True:
                frame = reader.wait(10)
                assert frame is not None, f"pulse {pulse_id} never written; {camera.log[-5:]}"
                if frame.pulse_id == pulse_id:
                    return

        @settings(
            max_examples=300,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(message=MESSAGES)
        def poison_then_good(message):
            push.send_multipart(message)
            sent["bad"] += 1
            good()
            assert camera.process.poll() is None

        poison_then_good()
        reader.close()
    finally:
        push.close(linger=0)
        context.term()
    total = sent["bad"] + sent["good"]

    def accounted():  # every message written or counted as an error, none lost or fatal
        counters = camera.counters()
        return counters["frames_out"] + counters["errors"] == total and counters

    counters = wait_for(accounted, what="every message accounted for")
    assert counters["errors"] > sent["bad"] // 2  # the mutations do bite
    assert camera.process.poll() is None
