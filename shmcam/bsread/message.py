"""What the decoder returns for one bsread message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded bsread message.

    ``data`` maps channel names to values, in data-header order. A value is a read-only numpy
    array, a numpy scalar (every 1-element channel), a ``str``, or None (empty, or
    undecodable: see ``errors``). Channels missing from a short message are absent.
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
