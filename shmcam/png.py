"""PNG images of 2-D arrays: numpy and zlib only, 8-bit grey or through a colormap.

Used by the REST API's previews and by CamServer's get_png_from_image helper.
"""

from __future__ import annotations

import functools
import struct
import zlib

import numpy as np

from . import colormaps as maps

DEFAULT_COLORMAP = "rainbow"  # CamServer's


def colormaps() -> list[str]:
    return maps.names()


@functools.cache
def _lut(name: str) -> np.ndarray:
    lut = maps.table(name)
    lut.flags.writeable = False
    return lut


def scale(image: np.ndarray, min_value=None, max_value=None) -> np.ndarray:
    """8-bit image from the given (or the image's own) range; NaN shows as black."""
    data = np.nan_to_num(image.astype(np.float32), nan=np.float32(min_value or 0))
    low = float(np.min(data)) if min_value is None else float(min_value)
    high = float(np.max(data)) if max_value is None else float(max_value)
    span = high - low if high > low else 1.0
    return np.clip((data - low) * (255.0 / span), 0, 255).astype(np.uint8)


def to_levels(image: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as the 256 levels of a colormap (matplotlib's binning: level
    int(v * 256), 1.0 the top level; below 0 the lowest, above 1 the highest, NaN 0)."""
    return np.clip(np.nan_to_num(image * 256.0, nan=0.0), 0, 255).astype(np.uint8)


def encode(image8: np.ndarray, colormap: str = "grey") -> bytes:
    """PNG of 8-bit levels through the named colormap (grey ones as a grey PNG)."""
    if colormap not in maps.names():
        raise ValueError(f"unknown colormap {colormap!r}; use one of {', '.join(colormaps())}")
    height, width = image8.shape
    if colormap in ("grey", "gray"):  # one channel: a grey PNG
        pixels, color_type = _lut(colormap)[image8, 0], 0
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
