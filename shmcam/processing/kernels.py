"""numba kernels for the per-pixel work: one pass over the image, no temporaries.

Compiled once per dtype and cached on disk (cache=True; NUMBA_CACHE_DIR where the package
directory is not writable). Pipelines warm them up before they report ready.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def profiles(image):
    """(x_profile, y_profile) as int64: column sums and row sums, in one pass."""
    height, width = image.shape
    x_profile = np.zeros(width, np.int64)
    y_profile = np.zeros(height, np.int64)
    for j in range(height):
        row = image[j]
        total = 0
        for i in range(width):
            value = np.int64(row[i])
            x_profile[i] += value
            total += value
        y_profile[j] = total
    return x_profile, y_profile


@njit(cache=True, nogil=True)
def pixel_pass(
    source, rect, background, clamp, threshold, affine, out, readback, cols, rows, extremes
):
    """The per-pixel pre-processing and the profiles of a rectangle of source, in one pass.

    rect = (row_start, row_stop, col_start, col_stop) of source. Per pixel, in the spec's
    order: minus background (None: none; clamp: 0 where it exceeds the pixel), below threshold
    (None: none) to 0, times affine[0] plus affine[1] (None: none); the result is written to
    out (the rectangle's shape; None when nothing is to be done). What is stored is what adds
    up into the column and row sums cols and rows (None: not summed): with readback, the
    stored value is read back, for a store that may round or wrap. Returns the (min, max) of
    the pixels, NaN ignored, starting from extremes ((max, min) of out's dtype, so that the
    comparisons stay in that type and vectorise). None arguments are compiled out.
    """
    row_start, row_stop, col_start, col_stop = rect
    low, high = extremes
    # zeros typed as the pixels and as the sums: a pixel set to 0 keeps its (narrow) type
    zero_pixel = np.zeros(1, source.dtype)[0]
    if rows is not None:
        zero_sum = np.zeros(1, rows.dtype)[0]
    for i in range(row_stop - row_start):
        # row slices indexed from 0: numba then needs no negative-index wrap-around per
        # pixel, and the loop vectorises (4x faster than row[col_start + j])
        row = source[row_start + i, col_start:col_stop]
        if background is not None:
            subtrahends = background[row_start + i, col_start:col_stop]
        if out is not None:
            out_row = out[i]
        if rows is not None:
            total = zero_sum
        for j in range(row.size):
            value = row[j]
            if background is not None:
                subtrahend = subtrahends[j]
                value = zero_pixel if clamp and subtrahend > value else value - subtrahend
            if threshold is not None and value < threshold:
                value = zero_pixel
            if affine is not None:
                value = value * affine[0] + affine[1]
            if out is not None:
                out_row[j] = value
                if readback:
                    value = out_row[j]
            if rows is not None:
                low = min(low, value) if value == value else low
                high = max(high, value) if value == value else high
                cols[j] += value
                total += value
        if rows is not None:
            rows[i] = total
    return low, high


@njit(cache=True, nogil=True)
def band_sums(image, rect, bounds, along_rows, sums):
    """Profiles of bands of a rectangle of image, added into sums[k]: band k is the rows
    [bounds[k], bounds[k+1]) of the rectangle summed per column (along_rows), or its columns
    in that range summed per row."""
    row_start, row_stop, col_start, col_stop = rect
    bands = bounds.size - 1
    if along_rows:
        for k in range(bands):
            band = sums[k]
            for i in range(bounds[k], bounds[k + 1]):
                row = image[row_start + i, col_start:col_stop]
                for j in range(row.size):
                    band[j] += row[j]
    else:
        for i in range(row_stop - row_start):
            row = image[row_start + i, col_start:col_stop]
            for k in range(bands):
                band = row[bounds[k] : bounds[k + 1]]
                total = sums[k, i]
                for j in range(band.size):
                    total += band[j]
                sums[k, i] = total
