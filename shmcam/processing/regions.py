"""The good region (the beam's core, fitted again without the tails) and its slices (bands
across the beam, each fitted: the beam's tilt and the x/y coupling), per docs/spec/processing.md.

Pixel sums of the region and of the bands are numba passes over the pre-processed image where
it lies (Prepared.base); the Python loops here run over bands, never over pixels.
"""

from __future__ import annotations

import numpy as np

from . import kernels
from .config import Settings, Slices
from .fit import fitted, gauss_fits, line_fit
from .preprocess import Prepared, accumulator, pixel_pass
from .profile import as_float, good_region_bounds, slice_bounds

FIT = ("gauss_function", "offset", "amplitude", "mean", "standard_deviation", "converged")
GOOD_REGION = (
    "good_region",
    "gr_x_axis",
    "gr_y_axis",
    "gr_x_profile",
    "gr_y_profile",
    "gr_intensity",
    *(f"gr_{a}_fit_{name}" for a in "xy" for name in FIT),
)
SLICE = ("center_x", "center_y", "standard_deviation", "intensity", "fit_converged")
COUPLING = ("coupling", "coupling_slope", "coupling_offset")


def fit_fields(prefix: str, offset, amplitude, mean, sigma, converged, curve) -> dict:
    """The `<prefix>_fit_*` fields of one Gaussian fit."""
    return dict(
        zip(
            (f"{prefix}_fit_{name}" for name in FIT),
            (curve, offset, amplitude, mean, sigma, converged),
        )
    )


def good_region(frame: Prepared, settings: Settings) -> dict:
    """The good-region fields, and the slice fields if slices are configured; the fields are
    null where the region is empty (a flat image, say)."""
    fields = dict.fromkeys(GOOD_REGION)
    slices = settings.slices
    if slices is not None:
        fields.update(
            slice_orientation=slices.orientation, slice_amount=slices.number, slice_length=None
        )
        fields.update(
            dict.fromkeys(f"slice_{i}_{name}" for i in range(slices.number) for name in SLICE)
        )
        fields.update(dict.fromkeys(COUPLING))
    threshold, gfscale = settings.good_region.threshold, settings.good_region.gfscale
    x_start, x_end = good_region_bounds(as_float(frame.x_profile), threshold, gfscale)
    y_start, y_end = good_region_bounds(as_float(frame.y_profile), threshold, gfscale)
    if x_end <= x_start or y_end <= y_start:
        return fields
    row, col = frame.rect[0], frame.rect[2]
    rect = (row + y_start, row + y_end, col + x_start, col + x_end)
    sums = pixel_pass(frame.base, rect)
    x_axis, y_axis = frame.x_axis[x_start:x_end], frame.y_axis[y_start:y_end]
    x_fit = fitted(as_float(sums.cols), as_float(x_axis))
    y_fit = fitted(as_float(sums.rows), as_float(y_axis))
    fields.update(
        good_region=[x_start, y_start, x_end, y_end],
        gr_x_axis=x_axis,
        gr_y_axis=y_axis,
        gr_x_profile=sums.cols,
        gr_y_profile=sums.rows,
        gr_intensity=sums.cols.sum(),
        **fit_fields("gr_x", *x_fit),
        **fit_fields("gr_y", *y_fit),
    )
    if slices is not None:
        fields.update(_slice_fields(frame.base, rect, x_axis, y_axis, x_fit, y_fit, slices))
    return fields


def _slice_fields(image, rect, x_axis, y_axis, x_fit, y_fit, slices: Slices) -> dict:
    """slice_* fields of the configured orientation; coupling always from the bands along x."""
    along_x, length = fitted_bands(image, rect, x_axis, y_axis, x_fit, slices, along_rows=False)
    bands = along_x
    if slices.orientation == "vertical":
        bands, length = fitted_bands(image, rect, y_axis, x_axis, y_fit, slices, along_rows=True)
    fields = {"slice_length": length}
    for i, band in enumerate(bands):
        fields.update(zip((f"slice_{i}_{name}" for name in SLICE), band))
    x_centers = np.array([band[0] for band in along_x], np.float64)
    y_centers = np.array([band[1] for band in along_x], np.float64)
    slope, offset, ok = line_fit(x_centers, y_centers)
    if ok:
        fields.update(coupling=slope * x_fit[3] ** 2, coupling_slope=slope, coupling_offset=offset)
    return fields


def fitted_bands(image, rect, along, across, fit, slices: Slices, along_rows: bool):
    """([(center_x, center_y, sigma, intensity, converged) per band], middle band length) of
    the bands along the `along` axis, centred on the good-region fit, each fitted across."""
    bounds, half = slice_bounds(as_float(along), fit[2], fit[3], slices.number, slices.scale)
    if bounds.size == 0:
        return [], None
    sums = np.zeros((bounds.size - 1, across.size), accumulator(image.dtype))
    kernels.band_sums(image, rect, bounds, along_rows, sums)
    means, sigmas, converged = gauss_fits(sums, as_float(across))
    positions = along[bounds[:-1] + half].astype(np.float64)
    centers = zip(means, positions) if along_rows else zip(positions, means)
    bands = [
        (*center, sigma, intensity, ok)
        for center, sigma, intensity, ok in zip(centers, sigmas, sums.sum(axis=1), converged)
    ]
    middle = (bounds.size - 2) // 2
    return bands, float(abs(along[bounds[middle]] - along[bounds[middle + 1]]))
