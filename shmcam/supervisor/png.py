"""PNG previews of frames for the REST API: numpy and zlib only, 8-bit grey or a colormap."""

from __future__ import annotations

import struct
import zlib

import numpy as np

# A few anchor colours per map, interpolated to 256 entries.
_ANCHORS = {
    "grey": [(0, 0, 0), (255, 255, 255)],
    "viridis": [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)],
    "hot": [(0, 0, 0), (230, 0, 0), (255, 210, 0), (255, 255, 255)],
}


def colormaps() -> list[str]:
    return sorted(_ANCHORS)


def _lut(name: str) -> np.ndarray:
    anchors = np.array(_ANCHORS[name], dtype=np.float64)
    x = np.linspace(0, len(anchors) - 1, 256)
    return np.stack(
        [np.interp(x, np.arange(len(anchors)), anchors[:, c]) for c in range(3)], axis=1
    ).astype(np.uint8)


def scale(image: np.ndarray, min_value=None, max_value=None) -> np.ndarray:
    """8-bit image from the given (or the image's own) range; NaN shows as black."""
    data = np.nan_to_num(image.astype(np.float32), nan=np.float32(min_value or 0))
    low = float(np.min(data)) if min_value is None else float(min_value)
    high = float(np.max(data)) if max_value is None else float(max_value)
    span = high - low if high > low else 1.0
    return np.clip((data - low) * (255.0 / span), 0, 255).astype(np.uint8)


def encode(image8: np.ndarray, colormap: str = "grey") -> bytes:
    if colormap not in _ANCHORS:
        raise ValueError(f"unknown colormap {colormap!r}; use one of {', '.join(colormaps())}")
    height, width = image8.shape
    if colormap == "grey":
        pixels, color_type = image8, 0
    else:
        pixels, color_type = _lut(colormap)[image8].reshape(height, width * 3), 2
    rows = np.empty((height, pixels.shape[1] + 1), np.uint8)
    rows[:, 0] = 0  # filter type "none" for every row
    rows[:, 1:] = pixels

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 3))
        + chunk(b"IEND", b"")
    )
