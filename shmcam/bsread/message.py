"""What the decoder returns for one bsread message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded bsread message.

    ``data`` maps channel names to values, in data-header order. A value is a read-only numpy
    array, a numpy scalar (every 1-element channel), a ``str``, a ``Compressed`` part (the
    channels a ``Decoder(raw=...)`` keeps compressed), or None (empty, or undecodable: see
    ``errors``). Channels missing from a short message are absent.
    ``timestamps`` maps the same names to ``(sec, ns)`` or None.
    ``format_changed`` is true when the data header's hash differs from the previous message's
    (the header was parsed again).
    ``errors`` maps channel names to why their value (or timestamp) came out as None.
    """

    pulse_id: int
    global_timestamp: tuple[int, int]
    data: dict[str, Any]
    timestamps: dict[str, tuple[int, int] | None]
    format_changed: bool
    hash: str
    errors: dict[str, str]


@dataclass(frozen=True, slots=True)
class Compressed:
    """A channel value kept as it arrived: its compressed part, not decompressed.

    For consumers that store or forward the bytes as they are: a ``bitshuffle_lz4`` part is an
    HDF5 bitshuffle chunk already. ``data`` is a zero-copy view of the received part, whose
    framing the decoder has checked (spec section 6); ``dtype`` (with the channel's byte order)
    and ``shape`` (numpy order) describe the uncompressed array.
    """

    data: memoryview
    codec: str
    dtype: np.dtype
    shape: tuple[int, ...]
