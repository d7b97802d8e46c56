"""Encoder and Decoder without sockets: types, shapes, compression, caching and bad input."""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest

from shmcam.bsread import BsreadError, Decoder, Encoder, codec_name
from shmcam.bsread.compression import compress
from shmcam.bsread.types import TYPE_CODES

NUMERIC_TYPES = [name for name in TYPE_CODES if name != "string"]
CODECS = ["none", "lz4", "bitshuffle_lz4"]
STAMP = (1700000000, 123456789)


def sample(type_name, n, seed=0):
    """n values of a bsread type over its whole range (extremes included)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(TYPE_CODES[type_name])
    if dtype.kind == "b":
        return rng.integers(0, 2, n).astype(bool)
    if dtype.kind == "f":
        values = rng.standard_normal(n).astype(dtype) * dtype.type(1e3)
        values[: min(n, 3)] = [np.finfo(dtype).max, np.finfo(dtype).tiny, -0.0][: min(n, 3)]
        return values
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
    values[: min(n, 2)] = [info.min, info.max][: min(n, 2)]
    return values


def roundtrip(data, compression=None, **encoder_options):
    parts = Encoder(compression, **encoder_options).encode(data, 7, STAMP)
    return Decoder().decode([bytes(part) for part in parts])


def channel_entries(parts):
    return json.loads(bytes(parts[1]))["channels"]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("type_name", NUMERIC_TYPES)
def test_every_type_round_trips_under_every_compression(type_name, codec):
    array = sample(type_name, 300).reshape(3, 4, 25)
    big = array.astype(array.dtype.newbyteorder(">"))
    scalar = array.reshape(-1)[0]
    got = roundtrip({"a": array, "big": big, "scalar": scalar}, codec)
    assert got.errors == {}
    for name, sent in (("a", array), ("big", big)):
        value = got.data[name]
        assert value.dtype == sent.dtype and value.shape == (3, 4, 25) and not value.flags.writeable
        assert value.tobytes() == sent.tobytes()
    assert (
        got.data["scalar"].dtype == scalar.dtype
        and got.data["scalar"].tobytes() == scalar.tobytes()
    )
    assert got.timestamps == {"a": STAMP, "big": STAMP, "scalar": STAMP}


@pytest.mark.parametrize("codec", ["lz4", "bitshuffle_lz4"])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 127, 4095, 4096, 4097, 5003, 3 * 8192 + 13])
@pytest.mark.parametrize("type_name", ["uint8", "uint16", "int32", "float64", "bool"])
def test_compression_of_odd_sizes(type_name, n, codec):
    array = sample(type_name, n, seed=n)
    value = roundtrip({"v": array}, codec).data["v"]
    if n == 1:
        assert value == array[0]
    else:
        assert value.dtype == array.dtype and np.array_equal(value, array)


def test_bitshuffle_part_layout_follows_the_spec():
    part = bytes(compress(np.arange(5003, dtype=np.uint16), "bitshuffle_lz4"))
    assert struct.unpack_from(">qi", part) == (10006, 8192)  # size in bytes, block size in bytes
    first = struct.unpack_from(">I", part, 12)[0]
    second = struct.unpack_from(">I", part, 16 + first)[0]
    assert 12 + 4 + first + 4 + second + 3 * 2 == len(part)  # 4096 + 904 elements, 3 raw ones
    assert part[-6:] == np.arange(5000, 5003, dtype=np.uint16).tobytes()


def test_python_values_and_shapes_follow_the_spec():
    data = {
        "int": -(2**62),
        "float": 0.1,
        "bool": True,
        "str": "µm ✓",
        "list": [[1, 2, 3], [4, 5, 6]],
        "image": np.arange(12, dtype=np.uint16).reshape(3, 4),
        "np_scalar": np.float32(2.5),
        "zero_d": np.array(9, np.int16),
        "empty": np.empty((0, 4)),
    }
    parts = Encoder().encode(data, 1, STAMP)
    header = {entry["name"]: (entry["type"], entry["shape"]) for entry in channel_entries(parts)}
    assert header == {
        "int": ("int64", [1]),
        "float": ("float64", [1]),
        "bool": ("bool", [1]),
        "str": ("string", [1]),
        "list": ("int64", [3, 2]),
        "image": ("uint16", [4, 3]),
        "np_scalar": ("float32", [1]),
        "zero_d": ("int16", [1]),
        "empty": ("float64", [4, 0]),
    }
    assert bytes(parts[2 + 2 * 5]) == bytes.fromhex(
        "0000 0100 0200 0300 0400 0500 0600 0700 0800 0900 0a00 0b00"
    )
    got = Decoder().decode(parts)
    assert got.data["int"] == -(2**62) and got.data["float"] == 0.1 and got.data["bool"] is np.True_
    assert got.data["str"] == "µm ✓" and got.data["list"].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert (
        got.data["image"].shape == (3, 4) and got.data["zero_d"] == 9 and got.data["empty"] is None
    )
    assert got.timestamps["empty"] is None  # an empty part's timestamp is skipped


def test_uncompressed_arrays_are_not_copied_either_way():
    image = np.arange(64 * 48, dtype=np.uint16).reshape(48, 64)
    parts = Encoder().encode({"image": image}, 1, STAMP)
    assert np.shares_memory(np.frombuffer(parts[2], np.uint8), image)
    received = [bytes(part) for part in parts]
    value = Decoder().decode(received).data["image"]
    assert np.shares_memory(value, np.frombuffer(received[2], np.uint8))


def test_non_contiguous_arrays_are_sent_correctly():
    base = np.arange(200, dtype=np.int32).reshape(10, 20)
    for view in (base[:, ::3], base.T, base[::-1]):
        value = roundtrip({"v": view}).data["v"]
        assert value.shape == view.shape and np.array_equal(value, view)


def test_data_header_is_rebuilt_only_when_the_format_changes():
    encoder = Encoder()
    first = encoder.encode({"x": np.zeros(4), "s": "short"}, 1, STAMP)
    same = encoder.encode({"x": np.ones(4), "s": "a much longer string"}, 2, STAMP)
    assert same[1] is first[1]  # the cached bytes themselves
    changes = [
        {"x": np.zeros(4, np.float32), "s": ""},
        {"x": np.zeros(5), "s": ""},
        {"x": np.zeros(4).astype(">f8"), "s": ""},
        {"s": "", "x": np.zeros(4)},
        {"x": np.zeros(4), "s": "", "new": 1},
    ]
    hashes = {json.loads(first[0])["hash"]}
    for data in changes:
        parts = encoder.encode(data, 3, STAMP)
        hashes.add(json.loads(parts[0])["hash"])
    assert len(hashes) == 1 + len(changes)


def test_none_values_follow_the_pipeline_rules():
    encoder = Encoder()
    with pytest.raises(BsreadError, match="at least one channel"):
        encoder.encode({"never_typed": None}, 1, STAMP)
    first = encoder.encode({"a": 1.5, "never_typed": None}, 1, STAMP)
    assert [entry["name"] for entry in channel_entries(first)] == ["a"]  # dropped
    second = encoder.encode({"a": None, "never_typed": None}, 2, STAMP)
    assert second[1] is first[1] and second[2:] == [b"", b""]  # known: empty parts, same header
    assert Decoder().decode(second).data == {"a": None}


def test_compression_settings():
    assert [
        codec_name(value) for value in (None, False, "none", True, "LZ4", "bitshuffle_lz4")
    ] == ["none", "none", "none", "bitshuffle_lz4", "lz4", "bitshuffle_lz4"]
    with pytest.raises(ValueError, match="zstd"):
        Encoder(compression="zstd")
    parts = Encoder(True, header_compression="lz4").encode({"v": np.arange(10)}, 1, STAMP)
    assert json.loads(parts[0])["dh_compression"] == "lz4"
    got = Decoder().decode(parts)
    assert np.array_equal(got.data["v"], np.arange(10))


def test_float_timestamp_is_truncated_like_the_reference():
    parts = Encoder().encode({"v": 1}, 5, 1700000000.25)
    assert json.loads(parts[0])["global_timestamp"] == {"sec": 1700000000, "ns": 250000000}


@pytest.mark.parametrize(
    "value, error",
    [
        (np.zeros(3, np.complex64), "complex64 has no bsread type"),
        (np.zeros(3, np.float16), "float16 has no bsread type"),
        (["a", "b"], "<U1 has no bsread type"),
        ({"a": 1}, "cannot send a dict"),
        (b"bytes", "cannot send a bytes"),
    ],
)
def test_unsupported_values_name_the_channel(value, error):
    with pytest.raises(TypeError, match=rf"channel 'bad': .*{error}"):
        Encoder().encode({"bad": value}, 1, STAMP)


CAMERA = {
    "width": {"compression": None, "type": "int64"},
    "image": {"compression": None, "shape": [4, 3], "type": "uint16"},
    "label": {"type": "string"},
}


def test_declared_channels_give_the_camera_header_and_cast_values():
    encoder = Encoder(compression="bitshuffle_lz4", channel_meta=CAMERA)
    parts = encoder.encode(
        {"width": 4, "image": np.ones((3, 4), np.uint8), "label": None}, 1, STAMP
    )
    assert (
        bytes(parts[1])
        == json.dumps(
            {
                "htype": "bsr_d-1.1",
                "channels": [
                    {"compression": None, "type": "int64", "name": "width", "encoding": "little"},
                    {
                        "compression": None,
                        "shape": [4, 3],
                        "type": "uint16",
                        "name": "image",
                        "encoding": "little",
                    },
                    {
                        "type": "string",
                        "name": "label",
                        "compression": "bitshuffle_lz4",
                        "encoding": "little",
                    },
                ],
            }
        ).encode()
    )
    got = Decoder().decode(parts)
    assert got.data["image"].dtype == np.uint16 and got.data["image"].sum() == 12
    assert got.data["label"] is None  # a declared channel is known: None is sent as empty parts


@pytest.mark.parametrize(
    "data, error",
    [
        ({"image": np.ones((4, 3), np.uint16)}, ValueError),  # shape [3, 4], [4, 3] declared
        ({"image": np.ones((3, 4), np.uint32)}, TypeError),  # would lose bits
        ({"label": 5}, TypeError),
        ({"width": "four"}, TypeError),
    ],
)
def test_values_that_do_not_fit_their_declaration_are_refused(data, error):
    with pytest.raises(error, match="channel '"):
        Encoder(channel_meta=CAMERA).encode(data, 1, STAMP)


@pytest.mark.parametrize(
    "meta, error",
    [
        ({"shape": [2]}, "needs a bsread 'type', not None"),
        ({"type": "float16"}, "needs a bsread 'type', not 'float16'"),
        ({"type": "int8", "encoding": "native"}, "encoding 'native'"),
        ({"type": "int8", "shape": [-1]}, "shape \\[-1\\]"),
    ],
)
def test_declarations_are_checked(meta, error):
    with pytest.raises(ValueError, match=error):
        Encoder(channel_meta={"x": meta})


# --- decoding untrusted messages ---------------------------------------------------------------


def message(channels=None, main=None, parts=None):
    """A valid message (two float64[3] channels) with parts of it replaced."""
    encoder = Encoder()
    encoded = [
        bytes(part) for part in encoder.encode({"a": np.arange(3.0), "b": np.ones(3)}, 1, STAMP)
    ]
    if channels is not None:
        encoded[1] = json.dumps({"htype": "bsr_d-1.1", "channels": channels}).encode()
    if main is not None:
        encoded[0] = main if isinstance(main, bytes) else json.dumps(main).encode()
    for index, part in (parts or {}).items():
        encoded[index] = part
    return encoded


def main_header(**changes):
    header = {
        "htype": "bsr_m-1.1",
        "hash": "h",
        "pulse_id": 1,
        "global_timestamp": {"sec": 1, "ns": 2},
    }
    header.update(changes)
    return {key: value for key, value in header.items() if value is not None}


@pytest.mark.parametrize(
    "parts, error",
    [
        ([], "at least 2 parts"),
        ([b"{}"], "at least 2 parts"),
        (message(main=b"\xff{"), "main header is not UTF-8 JSON"),
        (message(main=b"[1, 2]"), "main header is not a JSON object"),
        (message(main=b"[" * 30000 + b"]" * 30000), "main header is not UTF-8 JSON"),  # too deep
        (message(main=b" " * 70000), "larger than"),
        (message(main=main_header(pulse_id=None)), "pulse_id None"),
        (message(main=main_header(pulse_id=True)), "pulse_id True"),
        (message(main=main_header(pulse_id="1")), "pulse_id '1'"),
        (message(main=main_header(hash=None)), "hash None"),
        (message(main=main_header(global_timestamp=1.5)), "global_timestamp"),
        (message(main=main_header(global_timestamp={"sec": 1.5, "ns": 0})), "global_timestamp"),
        (message(main=main_header(dh_compression="zip")), "unknown data header compression 'zip'"),
        (
            message(main=main_header(dh_compression="bitshuffle_lz4")),
            "data header: uncompressed size .* is impossible",
        ),
        (message(parts={1: b"{"}), "data header is not UTF-8 JSON"),
        (message(parts={1: b'{"channels": {}}'}), "no 'channels' list"),
        (message(channels=[{"type": "int8"}]), "channel 0 is not an object with a string 'name'"),
        (message(channels=["a"]), "channel 0 is not an object"),
        (message(channels=[{"name": "a"}, {"name": "a"}]), "names a channel twice"),
        (message(channels=[{"name": "a"}]), "6 parts for 1 channels"),
        (message(parts={2: 5}), "part of type int is not a contiguous buffer"),
        (message(parts={2: np.zeros((4, 4))[:, ::2]}), "not a contiguous buffer"),
    ],
)
def test_bad_messages_are_rejected_with_the_reason(parts, error):
    with pytest.raises(BsreadError, match=error):
        Decoder().decode(parts)


def test_epoch_is_accepted_instead_of_sec():
    got = Decoder().decode(message(main=main_header(global_timestamp={"epoch": 3, "ns": 4})))
    assert got.global_timestamp == (3, 4)


def bitshuffle_part(array, size=None, block=None, body=None):
    part = bytes(compress(array, "bitshuffle_lz4"))
    real_size, real_block = struct.unpack_from(">qi", part)
    return struct.pack(
        ">qi", real_size if size is None else size, real_block if block is None else block
    ) + (part[12:] if body is None else body(part[12:]))


BIG = np.arange(5003, dtype=np.float64)  # 4 full blocks, one of 896 elements, 3 raw


def with_block_length(body, length):
    return struct.pack(">I", length) + body[4:]


@pytest.mark.parametrize(
    "entry, part, error",
    [
        (
            {"type": "float64", "shape": [3]},
            b"\0" * 16,
            "16 bytes of data where the header's shape needs 24",
        ),
        ({"type": "float64"}, b"\0" * 12, "not a whole number of 8-byte items"),
        ({"type": "float128", "shape": [3]}, b"\0" * 24, "unknown type 'float128'"),
        ({"type": 5}, b"\0" * 8, "unknown type 5"),
        ({"type": "float64", "compression": "zip"}, b"\0" * 8, "unknown compression 'zip'"),
        ({"type": "float64", "shape": [-3]}, b"\0" * 8, "shape \\[-3\\] is not a list of sizes"),
        ({"type": "float64", "shape": "3"}, b"\0" * 8, "shape '3' is not a list"),
        ({"type": "string"}, b"\xff\xfe", "not UTF-8"),
        (
            {"type": "float64", "compression": "bitshuffle_lz4"},
            b"\0" * 11,
            "shorter than its 12-byte header",
        ),
        (
            {"type": "float64", "compression": "bitshuffle_lz4", "shape": [5003]},
            bitshuffle_part(BIG, size=8 * 5002),
            "40016 bytes of data where the header's shape needs 40024",
        ),
        (
            {"type": "float64", "compression": "bitshuffle_lz4"},
            bitshuffle_part(BIG, size=-8),
            "negative",
        ),
        (
            {"type": "float64", "compression": "bitshuffle_lz4"},
            bitshuffle_part(BIG, size=8 << 30),
            "impossible",
        ),
        (
            {"type": "float64", "compression": "bitshuffle_lz4"},
            bitshuffle_part(BIG, block=0),
            "block size 0",
        ),
        (
            {"type": "float64", "compression": "bitshuffle_lz4"},
            bitshuffle_part(BIG, block=8 * 12),
            "block size 96",
        ),
        (
            {"type": "float64", "compression": "bitshuffle_lz4"},
            bitshuffle_part(BIG, block=1 << 30),
            "block size",
        ),
        (
            {"type": "float64", "compression": "bitshuffle_lz4"},
            bitshuffle_part(BIG, block=4096),
            "blocks end at|data end in block|claims",
        ),  # the blocks were made with 8192
        (
            {"type": "float64", "compression": "bitshuffle_lz4"},
            bitshuffle_part(BIG, body=lambda body: with_block_length(body, 0)),
            "block 0 claims 0",
        ),
        (
            {"type": "float64", "compression": "bitshuffle_lz4"},
            bitshuffle_part(BIG, body=lambda body: with_block_length(body, 1 << 31)),
            "block 0 claims",
        ),
        (
            {"type": "float64", "compression": "bitshuffle_lz4"},
            bitshuffle_part(BIG, body=lambda body: body[:-100]),
            "blocks end at|data end in block",
        ),
        (
            {"type": "float64", "compression": "bitshuffle_lz4"},
            bitshuffle_part(BIG, body=lambda body: body + b"\0"),
            "blocks end at",
        ),
        (
            {"type": "float64", "compression": "bitshuffle_lz4"},
            bitshuffle_part(BIG, body=lambda body: body[:4] + b"\xff" * 100 + body[104:]),
            "corrupt bitshuffle_lz4",
        ),
        (
            {"type": "float64", "compression": "bitshuffle_lz4"},
            bitshuffle_part(BIG[:3], body=lambda b: b[:-1]),
            "23 bytes of data where the header's shape needs 24",
        ),
        ({"type": "float64", "compression": "lz4"}, b"\0\0\0", "shorter than its 4-byte size"),
        (
            {"type": "float64", "compression": "lz4"},
            bytes(compress(BIG, "lz4"))[:-9],
            "corrupt lz4",
        ),
        (
            {"type": "float64", "compression": "lz4"},
            struct.pack("<I", 8 * 5004) + bytes(compress(BIG, "lz4"))[4:],
            "decompress to 40024 bytes, the size field says 40032",
        ),
    ],
)
def test_a_bad_channel_decodes_as_none_with_the_reason(entry, part, error):
    parts = message(
        channels=[{"name": "bad", **entry}, {"name": "b", "type": "float64", "shape": [3]}],
        parts={2: part},
    )
    decoder = Decoder()
    got = decoder.decode(parts)
    assert got.data["bad"] is None and np.array_equal(got.data["b"], np.ones(3))
    assert list(got.errors) == ["bad"] and decoder.errors == 1
    assert decoder.last_error.startswith("bad: ")
    assert re.search(error, got.errors["bad"]), got.errors["bad"]


def test_a_bad_timestamp_keeps_the_value():
    got = Decoder().decode(message(parts={3: b"\0" * 15}))
    assert np.array_equal(got.data["a"], np.arange(3.0)) and got.timestamps["a"] is None
    assert got.errors == {"a": "timestamp part of 15 bytes instead of 16"}


def test_short_and_long_messages_follow_the_reference_receiver():
    parts = message()
    assert list(Decoder().decode(parts[:4]).data) == ["a"]  # missing channels are absent
    odd = Decoder().decode(parts[:5])  # a data part without its timestamp part
    assert odd.timestamps == {"a": STAMP, "b": None} and np.array_equal(odd.data["b"], np.ones(3))
    with pytest.raises(BsreadError, match="7 parts for 2 channels: at most 6"):
        Decoder().decode(parts + [b""])


def test_data_header_is_parsed_only_when_the_hash_changes():
    decoder = Decoder()
    assert decoder.decode(message()).format_changed
    again = decoder.decode(message(parts={1: b"not even JSON"}))  # same hash: part 1 is not read
    assert not again.format_changed and np.array_equal(again.data["a"], np.arange(3.0))
    changed = message(
        main=main_header(hash="other"),
        channels=[
            {"name": "x", "type": "int64", "shape": [3]},
            {"name": "y", "type": "int64", "shape": [3]},
        ],
    )
    assert list(decoder.decode(changed).data) == ["x", "y"]


def test_a_rejected_header_does_not_replace_the_cached_one():
    decoder = Decoder()
    decoder.decode(message())
    with pytest.raises(BsreadError):
        decoder.decode(message(main=main_header(hash="new"), parts={1: b"{"}))
    assert not decoder.decode(message()).format_changed


def test_big_endian_scalars_decode_as_native_numpy_scalars():
    value = roundtrip({"v": np.array([-123456], ">i4")}).data["v"]
    assert value == -123456 and value.dtype == np.dtype("int32") and value.dtype.isnative
