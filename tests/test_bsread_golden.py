"""shmcam.bsread against the messages captured from PSI's reference sender (tests/data/bsread)."""

from __future__ import annotations

import base64
import hashlib
import json

import numpy as np
import pytest

from shmcam.bsread import Decoder, Encoder
from shmcam.bsread.compression import decompress
from shmcam.bsread.types import numpy_dtype

CASES = [
    "scalars",
    "image_none",
    "image_bitshuffle",
    "image_bitshuffle_dh",
    "image_lz4",
    "odd_sizes",
    "big_endian",
    "header_change",
    "pipeline_like",
    "empty_values",
]


def load(golden_dir, case):
    """The file's JSON, and each message's parts as bytes."""
    doc = json.loads((golden_dir / f"{case}.json").read_text())
    return doc, [
        [base64.b64decode(part) for part in message["parts_b64"]] for message in doc["messages"]
    ]


def dtype_of(entry):
    return numpy_dtype(entry.get("type", "float64"), entry.get("encoding") == "big")


def assert_value(got, want, entry):
    """Bit-exact comparison with an ``expected`` channel, dtype and byte order included."""
    if want["value"] is None:
        assert got is None
    elif entry["type"] == "string":
        assert type(got) is str and got == want["value"]
    elif want["shape"] == []:  # every 1-element channel is a native numpy scalar
        assert isinstance(got, np.generic) and got.dtype == dtype_of(entry).newbyteorder("=")
        assert np.array(got).tobytes() == np.array(want["value"], got.dtype).tobytes()
    else:
        assert isinstance(got, np.ndarray) and not got.flags.writeable
        assert got.dtype == dtype_of(entry) and list(got.shape) == want["shape"]
        assert got.tobytes() == np.array(want["value"], got.dtype).tobytes()


@pytest.mark.parametrize("case", CASES)
def test_decoder_returns_the_expected_values(golden_dir, case):
    doc, messages = load(golden_dir, case)
    decoder = Decoder()  # one per file: header_changed exercises its hash cache
    for message, parts in zip(doc["messages"], messages):
        got = decoder.decode(parts)
        expected = message["expected"]
        assert got.pulse_id == expected["pulse_id"]
        assert got.global_timestamp == (
            expected["global_timestamp"]["sec"],
            expected["global_timestamp"]["ns"],
        )
        assert got.format_changed is message["header_changed"]
        assert got.hash == message["main_header"]["hash"]
        assert list(got.data) == list(expected["channels"]) == list(got.timestamps)
        assert got.errors == {} and decoder.errors == 0
        for entry, (name, want) in zip(
            message["data_header"]["channels"], expected["channels"].items()
        ):
            assert_value(got.data[name], want, entry)
            assert got.timestamps[name] == (
                tuple(want["timestamp"]) if want["timestamp"] else None
            ), name


def sent_values(message, parts):
    """The values the reference sender was given, rebuilt from ``expected`` and the data header."""
    values = {}
    channels = message["expected"]["channels"].items()
    for index, (entry, (name, want)) in enumerate(
        zip(message["data_header"]["channels"], channels)
    ):
        if want["value"] is None:
            if not parts[2 + 2 * index] and not parts[3 + 2 * index]:
                values[name] = None
            else:  # an empty value: it has a timestamp part, or a compressed data part
                values[name] = "" if entry["type"] == "string" else np.empty(0, dtype_of(entry))
        elif entry["type"] == "string":
            values[name] = want["value"]
        else:  # 1-element channels as 1-element arrays, so that big-endian ones stay big-endian
            values[name] = np.array(want["value"], dtype_of(entry)).reshape(want["shape"] or [1])
    return values


def camera_metadata(data_header):
    """cam_server's add_channel metadata: the keys before ``name``, in order."""
    meta = {}
    for entry in data_header["channels"]:
        keys = list(entry)
        meta[entry["name"]] = {key: entry[key] for key in keys[: keys.index("name")]}
    return meta


def assert_same_payload(ours, theirs, codec, entry):
    """Uncompressed parts byte for byte. Compressed parts after decompression, because other
    LZ4 builds give other bytes (README, Findings 7). Their size headers must still be equal.
    ``decompress`` accepts a bitshuffle part only if its blocks tile it exactly, so the
    framing matches too."""
    if codec == "none" or not theirs:
        assert ours == theirs
        return
    header = {"bitshuffle_lz4": 12, "lz4": 4}[codec]
    assert ours[:header] == theirs[:header]
    itemsize = dtype_of(entry).itemsize
    big = entry.get("encoding") == "big"
    assert bytes(decompress(memoryview(ours), codec, itemsize, None, big)) == bytes(
        decompress(memoryview(theirs), codec, itemsize, None, big)
    )


@pytest.mark.parametrize("case", CASES)
def test_encoder_reproduces_the_captured_parts(golden_dir, case):
    doc, messages = load(golden_dir, case)
    sender = doc["sender"]
    by_metadata = sender["channels"].startswith("add_channel")
    encoder = Encoder(
        sender["data_compression"],
        sender["data_header_compression"],
        channel_meta=camera_metadata(doc["messages"][0]["data_header"]) if by_metadata else None,
    )
    for number, (message, theirs) in enumerate(zip(doc["messages"], messages)):
        values = sent_values(message, theirs)
        if case == "scalars" and number == 0:
            # The reference sender types a never-seen None as float64; ours leaves it out until
            # it has seen a value. A float64 value first makes the header identical.
            encoder.encode(
                {name: 0.0 if value is None else value for name, value in values.items()}, 0, (0, 0)
            )
        stamp = message["expected"]["global_timestamp"]
        ours = [
            bytes(part)
            for part in encoder.encode(
                values, message["expected"]["pulse_id"], (stamp["sec"], stamp["ns"])
            )
        ]
        assert len(ours) == len(theirs)
        dh_codec = message["main_header"].get("dh_compression")
        if dh_codec:  # the hash covers the compressed header bytes: check it, not its value
            ours_main, theirs_main = json.loads(ours[0]), json.loads(theirs[0])
            assert ours_main.pop("hash") == hashlib.md5(ours[1]).hexdigest()
            theirs_main.pop("hash")
            assert ours_main == theirs_main and list(ours_main) == list(theirs_main)
            assert_same_payload(ours[1], theirs[1], dh_codec, {"type": "uint8"})
        else:
            assert ours[0] == theirs[0]
            assert ours[1] == theirs[1]
        for index, entry in enumerate(message["data_header"]["channels"]):
            codec = entry.get("compression") or "none"
            assert_same_payload(ours[2 + 2 * index], theirs[2 + 2 * index], codec, entry)
            assert ours[3 + 2 * index] == theirs[3 + 2 * index], entry["name"]
