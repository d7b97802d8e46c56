"""Encode channel values into the parts of one bsread message (spec sections 2-5, 8).

The data header is built only when the channel format changes: the set and order of
channels, or a channel's type, shape, byte order or compression. Per message, the only JSON
work is the small main header. Without compression, an array's part is a view of the array
itself (zero copy). See ``Encoder.encode`` for what that means for buffers that get reused.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import struct
import sys
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from .compression import NONE, codec_name, compress
from .errors import BsreadError
from .types import bsread_type, encoding_of, numpy_dtype

__all__ = ["CREATE_HEADER", "Encoder"]

CREATE_HEADER = ("on_change", "always", "once")

_TIMESTAMP = {"little": struct.Struct("<qq"), "big": struct.Struct(">qq")}
# The default numpy type of Python values (spec section 5).
_PYTHON_TYPES = ((bool, np.bool_), (int, np.int64), (float, np.float64))


class _Spec(NamedTuple):
    """What the data header says about one channel. A tuple of these is the format key."""

    name: str
    type: str
    shape: tuple[int, ...] | None  # bsread order (fastest axis first); None: not declared
    encoding: str
    compression: str


class _Declared(NamedTuple):
    """A channel with caller-given metadata (``channel_meta``)."""

    meta: dict[str, Any]
    dtype: np.dtype | None  # None for strings
    spec: _Spec


class Encoder:
    """Builds bsread messages.

    ``compression`` applies to every channel built from its value; ``header_compression`` to
    the data header. Both take None/"none", "lz4", "bitshuffle_lz4", or True meaning
    "bitshuffle_lz4" as in CamServer configs.

    ``channel_meta`` declares channels up front, the way cam_server registers its camera
    channels (``add_channel``): ``{"image": {"compression": None, "shape": [w, h],
    "type": "uint16"}, ...}``. Their header entries are the given keys in the given order,
    then ``name``, then ``compression`` if not given and the encoder has one, then
    ``encoding``. This reproduces CamServer's camera stream byte for byte. Values of declared
    channels are cast to the declared type (numpy values only when the cast is lossless) and
    must have the declared shape. A declared channel is always known: None sends empty parts.

    ``create_header`` (CamServer's pipeline key) says when the data header is built:
    "on_change" (default) when the channel format changes; "always" for every message (for
    receivers that cannot cope with a changing hash); "once" from the first message only, so a
    later message of another format is refused with BsreadError rather than changing the
    stream's format under its receivers.
    """

    def __init__(
        self,
        compression: object = None,
        header_compression: object = None,
        channel_meta: Mapping[str, Mapping[str, Any]] | None = None,
        create_header: str = "on_change",
    ) -> None:
        if create_header not in CREATE_HEADER:
            raise ValueError(
                f"create_header must be one of {', '.join(CREATE_HEADER)}, not {create_header!r}"
            )
        self.create_header = create_header
        self.compression = codec_name(compression)
        self.header_compression = codec_name(header_compression)
        self._declared = {
            name: self._declare(name, meta) for name, meta in (channel_meta or {}).items()
        }
        self._known: dict[str, _Spec] = {name: d.spec for name, d in self._declared.items()}
        self._format: tuple[_Spec, ...] | None = None
        self._header = b""
        self._hash = ""
        self.header_changes = 0  # formats seen: the first header counts as a change

    def encode(
        self, data: Mapping[str, Any], pulse_id: int, timestamp: tuple[int, int] | float
    ) -> list[bytes | memoryview]:
        """The parts of one message: main header, data header, then data and timestamp per channel.

        ``data`` maps channel names to values in message order: None, str, bool, int, float,
        numpy scalars, lists, numpy arrays. ``timestamp`` is ``(sec, ns)`` or float seconds.
        A None for a channel never typed (not declared, never sent with a value) is left out
        of the message. A None for a known channel goes out as two empty parts.

        Uncompressed array parts are views of the caller's arrays: ZMQ sends from that memory
        later. Do not overwrite such a buffer until ZMQ is done with it (``Sender(track=True)``
        tells when), or pass a copy.
        """
        sec, ns = _split_timestamp(timestamp)
        specs: list[_Spec] = []
        arrays: list[np.ndarray | None] = []
        for name, value in data.items():
            if value is None:
                spec, array = self._known.get(name), None
                if spec is None:
                    continue
            else:
                spec, array = self._convert(name, value)
                self._known[name] = spec
            specs.append(spec)
            arrays.append(array)
        if not specs:
            raise BsreadError(
                "a bsread message needs at least one channel with a known type; "
                f"got none among {list(data)}"
            )
        if tuple(specs) != self._format:
            if self.create_header == "once" and self._format is not None:
                raise BsreadError(
                    "create_header is 'once' and this message's channels differ "
                    f"from the stream's first ({[s.name for s in specs]})"
                )
            self._build_header(tuple(specs))
        elif self.create_header == "always":
            self._build_header(self._format)

        main = {"htype": "bsr_m-1.1"}
        if self.header_compression != NONE:
            main["dh_compression"] = self.header_compression
        main.update(
            hash=self._hash,
            pulse_id=operator.index(pulse_id),
            global_timestamp={"sec": sec, "ns": ns},
        )
        stamps = {encoding: packer.pack(sec, ns) for encoding, packer in _TIMESTAMP.items()}
        parts: list[bytes | memoryview] = [json.dumps(main).encode(), self._header]
        for spec, array in zip(specs, arrays):
            if array is None:
                parts += (b"", b"")
            else:
                parts += (
                    compress(array, spec.compression, spec.encoding == "big"),
                    stamps[spec.encoding],
                )
        return parts

    def _declare(self, name: str, meta: Mapping[str, Any]) -> _Declared:
        type_name = meta.get("type")
        encoding = meta.get("encoding", sys.byteorder)
        shape = meta.get("shape")
        try:
            dtype = None if type_name == "string" else numpy_dtype(type_name, encoding == "big")
        except (KeyError, AttributeError):
            raise ValueError(
                f"channel_meta[{name!r}] needs a bsread 'type', not {type_name!r}"
            ) from None
        if encoding not in _TIMESTAMP:
            raise ValueError(
                f"channel_meta[{name!r}]: encoding {encoding!r} is neither 'little' nor 'big'"
            )
        if shape is not None and not all(isinstance(size, int) and size >= 0 for size in shape):
            raise ValueError(f"channel_meta[{name!r}]: shape {shape!r} is not a list of sizes")
        compression = codec_name(meta["compression"]) if "compression" in meta else self.compression
        spec = _Spec(
            name, type_name, None if shape is None else tuple(shape), encoding, compression
        )
        return _Declared(dict(meta), dtype, spec)

    def _convert(self, name: str, value: Any) -> tuple[_Spec, np.ndarray]:
        """The C-contiguous array to send for a value, and its channel spec."""
        declared = self._declared.get(name)
        try:
            if declared is None:
                array, shape = _as_array(value)
                type_name = "string" if isinstance(value, str) else bsread_type(array.dtype)
                return _Spec(
                    name, type_name, shape, encoding_of(array.dtype), self.compression
                ), array
            array, shape = _as_array(value, declared.dtype)
        except (TypeError, ValueError, OverflowError) as error:
            raise type(error)(f"channel {name!r}: {error}") from None
        spec = declared.spec
        if (declared.dtype is None) != isinstance(value, str):
            raise TypeError(f"channel {name!r} is declared {spec.type}, got {type(value).__name__}")
        if spec.shape is not None and spec.shape != shape:
            raise ValueError(
                f"channel {name!r}: value of bsread shape {list(shape)} where {list(spec.shape)} "
                "is declared; declare the new shape (new Encoder) instead"
            )
        return spec, array

    def _build_header(self, specs: tuple[_Spec, ...]) -> None:
        self.header_changes += specs != self._format
        header = {"htype": "bsr_d-1.1", "channels": [self._entry(spec) for spec in specs]}
        raw = json.dumps(header).encode()
        if self.header_compression != NONE:
            raw = compress(np.frombuffer(raw, np.uint8), self.header_compression)
        self._header = bytes(raw)
        self._hash = hashlib.md5(self._header).hexdigest()
        self._format = specs

    def _entry(self, spec: _Spec) -> dict[str, Any]:
        """One channel of the data header, in the key order the reference sender writes."""
        declared = self._declared.get(spec.name)
        if declared is None:  # built from the value
            entry = {
                "name": spec.name,
                "type": spec.type,
                "shape": list(spec.shape),
                "encoding": spec.encoding,
            }
            if self.compression != NONE:
                entry["compression"] = self.compression
            return entry
        entry = dict(declared.meta)
        entry["name"] = spec.name
        if "compression" not in entry and self.compression != NONE:
            entry["compression"] = self.compression
        entry.setdefault("encoding", spec.encoding)
        return entry


def _as_array(value: Any, dtype: np.dtype | None = None) -> tuple[np.ndarray, tuple[int, ...]]:
    """A C-contiguous array holding the value's bytes, and its bsread shape.

    Strings become UTF-8 bytes; scalars 1-element arrays (shape [1]); arrays keep their
    memory unless they are not C-contiguous or need a cast.
    """
    if isinstance(value, str):
        return np.frombuffer(value.encode("utf-8"), np.uint8), (1,)
    if isinstance(value, (np.ndarray, np.generic)):
        if dtype is not None and not np.can_cast(value.dtype, dtype, "safe"):
            raise TypeError(f"{value.dtype} does not cast losslessly to {dtype}")
        array = np.ascontiguousarray(value, dtype)
    elif isinstance(value, (list, tuple)):
        array = np.array(value, dtype)
    else:
        default = next(
            (
                numpy_type
                for python_type, numpy_type in _PYTHON_TYPES
                if isinstance(value, python_type)
            ),
            None,
        )
        if default is None:
            raise TypeError(f"bsread cannot send a {type(value).__name__}")
        array = np.array(value, dtype or default)
    if array.ndim == 0:
        return array.reshape(1), (1,)
    return array, array.shape[::-1]


def _split_timestamp(timestamp: tuple[int, int] | float) -> tuple[int, int]:
    """(sec, ns) from a (sec, ns) pair, or from float seconds truncated as the reference does."""
    if isinstance(timestamp, (tuple, list)):
        sec, ns = timestamp
        return operator.index(sec), operator.index(ns)
    return int(timestamp), int(math.modf(timestamp)[0] * 1e9)
