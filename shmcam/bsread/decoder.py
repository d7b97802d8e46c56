"""Decode bsread multipart messages, treating every byte as untrusted (spec sections 2-7).

A message that cannot be decoded as a whole raises BsreadError: a bad main header, an
unreadable data header, or more parts than channels. A single bad channel does not stop the
message: its value becomes None, and the reason is recorded in ``Message.errors`` and counted
in ``Decoder.errors``. This follows the reference receiver.

The data header is parsed only when the main header's ``hash`` changes. A header the decoder
has seen costs nothing beyond the small main-header JSON.

On request (``raw``), compressed array channels are not decompressed: their value is the
part itself, framing checked, as a ``Compressed``. Writing a bitshuffle_lz4 image into an HDF5
file this way costs no decompression and no recompression.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from .compression import CODECS, NONE, check_compressed, decompress
from .errors import BsreadError
from .message import Compressed, Message
from .types import numpy_dtype

__all__ = ["Decoder"]

log = logging.getLogger(__name__)

#: The main header is ~150 bytes; anything this large is not bsread.
MAX_MAIN_HEADER = 64 << 10

_TIMESTAMP = {False: struct.Struct("<QQ"), True: struct.Struct(">QQ")}


class _Channel(NamedTuple):
    """How to decode one channel. Built once per data header."""

    name: str
    dtype: np.dtype | None = None
    shape: tuple[int, ...] | None = None  # numpy order; None: leave 1-D
    nbytes: int | None = None  # payload size the shape implies, if it implies one
    codec: str = NONE
    big_endian: bool = False
    string: bool = False
    problem: str | None = None  # why no value of this channel can be decoded
    raw: bool = False  # hand out the compressed part as it is


class Decoder:
    """Turns the parts of one ZMQ multipart message into a ``Message``.

    Parts may be bytes, memoryviews, zmq.Frames or anything else with a contiguous buffer.
    Uncompressed arrays are read-only views of the parts' memory (no copy): they keep the
    parts alive. One decoder per stream, because the data header is cached by its hash.

    ``raw(name, shape, codec)`` picks the compressed channels (with a declared shape, numpy
    order) whose values come as ``Compressed`` instead of arrays. It is asked once per data
    header, not per message.
    """

    def __init__(self, raw: Callable[[str, tuple[int, ...], str], bool] | None = None) -> None:
        #: Number of channel values or timestamps that decoded as None because they were bad.
        self.errors = 0
        #: "channel: why" for the most recent of those.
        self.last_error: str | None = None
        self._hash: str | None = None
        self._channels: tuple[_Channel, ...] = ()
        self._raw = raw

    def decode(self, parts: Sequence[Any]) -> Message:
        """Decode one message; raise BsreadError saying why when it must be rejected."""
        if len(parts) < 2:
            raise BsreadError(
                f"a bsread message has at least 2 parts (main and data header), got {len(parts)}"
            )
        pulse_id, global_timestamp, hash_, dh_codec = _main_header(_buffer(parts[0]))
        changed = hash_ != self._hash
        if changed:
            self._channels = self._pick_raw(_data_header(_buffer(parts[1]), dh_codec))
            self._hash = hash_
        channels = self._channels
        if len(parts) > 2 + 2 * len(channels):
            raise BsreadError(
                f"{len(parts)} parts for {len(channels)} channels: "
                f"at most {2 + 2 * len(channels)} allowed"
            )

        data: dict[str, Any] = {}
        timestamps: dict[str, tuple[int, int] | None] = {}
        errors: dict[str, str] = {}
        for index, channel in enumerate(channels[: (len(parts) - 1) // 2]):
            name = channel.name
            part = _buffer(parts[2 + 2 * index])
            if not len(part):  # no value; the timestamp part is skipped unread
                data[name] = timestamps[name] = None
                continue
            try:
                data[name] = _value(part, channel)
            except BsreadError as error:
                data[name] = None
                errors[name] = str(error)
            timestamps[name] = None
            if 3 + 2 * index < len(parts):
                try:
                    timestamps[name] = _timestamp(_buffer(parts[3 + 2 * index]), channel.big_endian)
                except BsreadError as error:
                    errors.setdefault(name, str(error))
        if errors:
            self.errors += len(errors)
            self.last_error = "; ".join(f"{name}: {why}" for name, why in errors.items())
            log.debug("pulse %d: channels decoded as None: %s", pulse_id, self.last_error)
        return Message(pulse_id, global_timestamp, data, timestamps, changed, hash_, errors)

    def _pick_raw(self, channels: tuple[_Channel, ...]) -> tuple[_Channel, ...]:
        if self._raw is None:
            return channels
        return tuple(
            channel._replace(raw=True)
            if channel.codec != NONE
            and channel.shape is not None
            and not channel.problem
            and self._raw(channel.name, channel.shape, channel.codec)
            else channel
            for channel in channels
        )


def _buffer(part: Any) -> memoryview:
    """A flat byte view of a part, whatever buffer type it is."""
    try:
        view = memoryview(part)
        return view if view.ndim == 1 and view.itemsize == 1 else view.cast("B")
    except (TypeError, ValueError):
        raise BsreadError(
            f"a part of type {type(part).__name__} is not a contiguous buffer"
        ) from None


def _json(raw: Any, what: str) -> Any:
    try:
        return json.loads(str(raw, "utf-8"))
    except (
        ValueError,
        RecursionError,
    ) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BsreadError(f"{what} is not UTF-8 JSON: {error}") from None


INT64_MAX = 2**63 - 1  # pulse ids and times are int64 wherever they are stored


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _main_header(part: memoryview) -> tuple[int, tuple[int, int], str, str]:
    """pulse_id, (sec, ns), hash and data-header codec from part 0."""
    if len(part) > MAX_MAIN_HEADER:
        raise BsreadError(f"main header of {len(part)} bytes is larger than {MAX_MAIN_HEADER}")
    header = _json(part, "main header")
    if not isinstance(header, dict):
        raise BsreadError("main header is not a JSON object")
    pulse_id, hash_ = header.get("pulse_id"), header.get("hash")
    if not _is_int(pulse_id) or not 0 <= pulse_id <= INT64_MAX:
        raise BsreadError(f"main header pulse_id {pulse_id!r} is not an integer in 0..2**63-1")
    if not isinstance(hash_, str):
        raise BsreadError(f"main header hash {hash_!r} is not a string")
    stamp = header.get("global_timestamp")
    sec = stamp.get("sec", stamp.get("epoch")) if isinstance(stamp, dict) else None
    ns = stamp.get("ns") if isinstance(stamp, dict) else None
    if not (_is_int(sec) and _is_int(ns) and 0 <= sec <= INT64_MAX and 0 <= ns <= INT64_MAX):
        raise BsreadError(
            f"main header global_timestamp {stamp!r} has no integer sec (or epoch) and ns "
            f"in 0..2**63-1"
        )
    dh_codec = header.get("dh_compression") or NONE
    if dh_codec not in CODECS:
        raise BsreadError(f"unknown data header compression {dh_codec!r}")
    return pulse_id, (sec, ns), hash_, dh_codec


def _data_header(part: memoryview, codec: str) -> tuple[_Channel, ...]:
    try:
        raw = bytes(decompress(part, codec, 1))
    except BsreadError as error:
        raise BsreadError(f"data header: {error}") from None
    header = _json(raw, "data header")
    entries = header.get("channels") if isinstance(header, dict) else None
    if not isinstance(entries, list):
        raise BsreadError("data header has no 'channels' list")
    channels = tuple(_channel(index, entry) for index, entry in enumerate(entries))
    if len({channel.name for channel in channels}) != len(channels):
        raise BsreadError("data header names a channel twice")
    return channels


def _channel(index: int, entry: Any) -> _Channel:
    """Reader for one data-header entry. A structural fault rejects the header; a field that
    only makes this channel undecodable is recorded as its ``problem``."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise BsreadError(f"data header channel {index} is not an object with a string 'name'")
    name = entry["name"]
    type_name = entry.get("type", "float64")  # a missing type means float64
    big_endian = entry.get("encoding") == "big"
    try:
        dtype = numpy_dtype(type_name, big_endian)
    except (KeyError, AttributeError):
        return _Channel(name, problem=f"unknown type {type_name!r}")
    codec = entry.get("compression") or NONE
    if codec not in CODECS:
        return _Channel(name, problem=f"unknown compression {codec!r}")
    shape = entry.get("shape")
    if shape is not None and not (
        isinstance(shape, list) and all(_is_int(n) and n >= 0 for n in shape)
    ):
        return _Channel(name, problem=f"shape {shape!r} is not a list of sizes")
    string = type_name.lower() == "string"
    if string or shape is None or shape == [1]:  # not reshaped (spec section 5)
        return _Channel(name, dtype, None, None, codec, big_endian, string)
    numpy_shape = tuple(reversed(shape))  # bsread lists the fastest axis first
    return _Channel(
        name, dtype, numpy_shape, math.prod(numpy_shape) * dtype.itemsize, codec, big_endian
    )


def _value(part: memoryview, channel: _Channel) -> Any:
    if channel.problem:
        raise BsreadError(channel.problem)
    if channel.raw:
        size = check_compressed(
            part, channel.codec, channel.dtype.itemsize, channel.nbytes, channel.big_endian
        )
        return Compressed(part, channel.codec, channel.dtype, channel.shape) if size else None
    raw = decompress(
        part, channel.codec, channel.dtype.itemsize, channel.nbytes, channel.big_endian
    )
    if not len(raw):  # a compressed empty value
        return None
    if channel.string:
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as error:
            raise BsreadError(f"string is not UTF-8: {error}") from None
    array = np.frombuffer(raw, channel.dtype)
    if array.size == 1:
        return array[0]
    if channel.shape is not None:
        array = array.reshape(channel.shape)
    array.flags.writeable = False
    return array


def _timestamp(part: memoryview, big_endian: bool) -> tuple[int, int] | None:
    if not len(part):
        return None
    if len(part) != _TIMESTAMP[big_endian].size:
        raise BsreadError(f"timestamp part of {len(part)} bytes instead of 16")
    return _TIMESTAMP[big_endian].unpack(part)
