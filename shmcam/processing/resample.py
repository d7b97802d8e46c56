"""The pre-processing steps that resample the image: binning and rotation by any angle.

Each makes a new image (numba, one pass); their axes follow in numpy. Rotation is
scipy.ndimage.rotate(reshape=False, mode="constant") rebuilt (scipy is not a dependency):
same centre, direction and fill, orders 0 (nearest) and 1 (linear).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

UINT16_MAX = 65535.0
EDGE = 1e-6  # rounding slack at the image border (cos 90 deg is 6e-17, not 0)


@njit(cache=True, nogil=True)
def _bin(source, by, bx, mean, out):
    """Sum (or mean) of each by x bx block into out (uint16), clipped to 0..65535, truncated."""
    height, width = out.shape
    totals = np.empty(width)
    norm = 1.0 / (by * bx) if mean else 1.0
    for i in range(height):
        totals[:] = 0.0
        for k in range(by):
            row = source[i * by + k]
            for j in range(width):
                for m in range(bx):
                    totals[j] += row[j * bx + m]
        for j in range(width):
            value = totals[j] * norm
            out[i, j] = min(value, UINT16_MAX) if value > 0 else 0  # NaN too: 0


def binned(image, x_axis, y_axis, bx, by, mean):
    """(image, x_axis, y_axis) binned by bx x by: cropped to whole bins, uint16 result, axes
    averaged per bin in their own dtype."""
    out = bin_image(image, bx, by, mean)
    return out, bin_axis(x_axis, bx, out.shape[1]), bin_axis(y_axis, by, out.shape[0])


def bin_image(image, bx, by, mean):
    """image binned by bx x by (cropped to whole bins): sums or means, uint16."""
    out = np.empty((image.shape[0] // by, image.shape[1] // bx), np.uint16)
    _bin(image, by, bx, mean, out)
    return out


def bin_axis(axis, size, bins):
    """The first bins * size values of axis averaged per bin of size, in the axis' dtype."""
    return axis[: bins * size].reshape(bins, size).mean(axis=1).astype(axis.dtype)


@njit(cache=True, nogil=True)
def _sample(source, y, x, order):
    """source at the (in-range) point (y, x): nearest pixel or bilinear."""
    height, width = source.shape
    if order == 0:
        return float(
            source[
                min(int(math.floor(y + 0.5)), height - 1), min(int(math.floor(x + 0.5)), width - 1)
            ]
        )
    y0, x0 = min(int(math.floor(y)), height - 1), min(int(math.floor(x)), width - 1)
    y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
    fy, fx = y - y0, x - x0
    top = source[y0, x0] * (1 - fx) + source[y0, x1] * fx
    bottom = source[y1, x0] * (1 - fx) + source[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


@njit(cache=True, nogil=True)
def _rotate(source, degrees, order, fill, limits, out):
    """out = source turned counter-clockwise (as displayed, row 0 on top) by degrees about its
    centre; points from outside source get fill; integer outputs rounded and clipped to
    limits (None: a float output)."""
    height, width = source.shape
    radians = math.radians(degrees)
    c, s = math.cos(radians), math.sin(radians)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    for r in range(height):
        for q in range(width):
            dy, dx = r - cy, q - cx
            y, x = c * dy + s * dx + cy, -s * dy + c * dx + cx
            inside = -EDGE <= y <= height - 1 + EDGE and -EDGE <= x <= width - 1 + EDGE
            value = _sample(source, max(y, 0.0), max(x, 0.0), order) if inside else fill
            if limits is not None:
                value = math.floor(value + 0.5) if value == value else 0.0
                value = min(max(value, limits[0]), limits[1])
            out[r, q] = value


def rotated(image, rotation):
    """image rotated by rotation (config.Rotation) about its centre, same shape and dtype."""
    out = np.empty_like(image)
    limits = None
    if image.dtype.kind in "iu":
        info = np.iinfo(image.dtype)
        limits = (float(info.min), float(info.max))
    _rotate(image, rotation.angle, rotation.order, rotation.fill, limits, out)
    return out
