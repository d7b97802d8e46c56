"""`cam_server.pipeline.data_processing.functions`: CamServer's helpers, shmcam's own code.

Same names, signatures and results as CamServer's (docs/spec/camserver.md section 4.3), so
user scripts calling them run unchanged; computed by shmcam's processing modules where they
compute the same thing (fits, profiles, widths, good region, slices, binning), by scipy where
CamServer's numbers are scipy's own (rotation by any angle, gauss_fit_psss's bounded fit).
Where CamServer's result is a documented bug (section 12) the helper gives the fixed result,
as shmcam's standard processing does: apply_threshold compares with the threshold itself (not
int(threshold)); get_fw tests index 0 and never returns inf or NaN. docs/user-functions.md
lists these differences.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from shmcam import png
from shmcam.processing import config, fit, kernels, regions, resample
from shmcam.processing import profile as measures

log = logging.getLogger(__name__)

CHUNK_COPY_IMAGES = False  # CamServer's default: copy_image copies in one piece


def subtract_background(image, background_image):
    """image minus background, 0 where the background is larger, in the image's dtype; in
    place if the image is writable (a copy otherwise), which is returned."""
    if background_image is None:
        return image
    if image.shape != background_image.shape:
        raise RuntimeError(
            f"Invalid background_image size {background_image.shape} compared to image "
            f"{image.shape}"
        )
    image = enforce_image_writable(image)
    larger = background_image > image
    np.subtract(image, background_image, out=image, casting="unsafe")
    image[larger] = 0
    return image


def subtract_background_signed(image, background_image):
    """image as int32 minus background (negatives kept); always a new array."""
    image = image.astype("int32")
    if background_image is not None:
        np.subtract(image, background_image, out=image, casting="unsafe")
    return image


def is_number(var) -> bool:
    """Whether float(var) works."""
    try:
        float(var)
    except (TypeError, ValueError):
        return False
    return True


def rotate(image, degrees, order=1, mode="0.0"):
    """image rotated counter-clockwise by degrees about its centre, same shape: `mode`
    "ortho" turns by whole quarter turns (int(degrees / 90)); a number is the fill value
    of points from outside; reflect, nearest, mirror, wrap are scipy.ndimage's modes."""
    if mode == "ortho":
        return np.rot90(image, int(degrees / 90))
    from scipy import ndimage

    number = is_number(mode)
    return ndimage.rotate(
        image,
        float(degrees),
        reshape=False,
        order=order,
        mode="constant" if number else mode,
        cval=float(mode) if number else 0.0,
        prefilter=True,
    )


def get_region_of_interest(image, offset_x, size_x, offset_y, size_y):
    return image[offset_y : offset_y + size_y, offset_x : offset_x + size_x]


def apply_threshold(image, threshold=1):
    """Pixels below threshold set to 0, in place if the image is writable (a copy
    otherwise), which is returned. Compares with threshold itself, not int(threshold)."""
    image = enforce_image_writable(image)
    image[image < threshold] = 0
    return image


def get_min_max(image):
    return np.nanmin(image), np.nanmax(image)


def get_x_y_profile(image):
    """(column sums, row sums): int64 for integer images, else the image's sums."""
    if image.dtype.kind in "iu":
        return kernels.profiles(image)
    return image.sum(0), image.sum(1)


def get_intensity(profile):
    return profile.sum()


def find_index(axis, item):
    """Index of item on an ascending or descending axis: the last value <= item (ascending)
    or the first value <= item (descending), clamped to the axis."""
    return int(measures.axis_index(measures.as_float(axis), float(item)))


def get_good_region_profile(profile, threshold=0.3, gfscale=1.8):
    """(start, end) indices of the region around the maximum above min + (max - min) *
    threshold, widened by gfscale, clipped, truncated."""
    values = measures.as_float(profile)
    peak = int(np.argmax(values))
    low, high = values.min(), values.max()
    if values[peak] < low + (high - low) * threshold:  # threshold > 1: the maximum alone
        return peak, peak
    start, end = measures.good_region_bounds(values, threshold, gfscale)
    return int(start), int(end)


def gauss_fit(profile, axis, remove_outliers=True):
    """(gauss_function, offset, amplitude, mean, |sigma|, center_of_mass, rms) of the
    Gaussian fitted to profile over axis; the starting values when the fit fails. The centre
    of mass and rms are of the profile above the fitted offset, normalised, then without the
    points beyond 5 sigma (remove_outliers); or of the plain profile (remove_outliers
    False)."""
    if axis.shape[0] != profile.shape[0]:
        raise RuntimeError(f"Invalid axis passed {axis.shape[0]} {profile.shape[0]}")
    values, axis = measures.as_float(profile), measures.as_float(axis)
    offset, amplitude, mean, sigma, _, curve = fit.fitted(values, axis)
    if remove_outliers:
        center, rms = measures.center_and_rms(values, axis, offset, mean, sigma)
    else:
        total = values.sum()
        center = (axis * values).sum() / total
        rms = math.sqrt(abs((axis * axis * values).sum() / total - center * center))
    return curve, offset, amplitude, mean, sigma, center, rms


def calculate_slices(axis, center, standard_deviation, scaling=2, number_of_slices=9):
    """(band boundaries, half band in pixels, slice_length) of number_of_slices (odd) bands
    centred on center along axis: see docs/spec/processing.md."""
    if number_of_slices % 2 == 0:
        raise ValueError("Number of slices must be odd.")
    values = measures.as_float(axis)
    bounds, half = measures.slice_bounds(
        values, float(center), float(standard_deviation), number_of_slices, float(scaling)
    )
    length = None
    if bounds.size:
        middle = (bounds.size - 2) // 2
        length = abs(values[bounds[middle]] - values[bounds[middle + 1]])
    return [int(b) for b in bounds], int(half), length


def get_x_slices_data(
    image, x_axis, y_axis, x_center, x_standard_deviation, scaling=2, number_of_slices=11
):
    """([([center_x, center_y], sigma, intensity) per band], slice_length) of vertical bands
    along x, each band's y profile fitted."""
    return _slices(image, x_axis, y_axis, x_center, x_standard_deviation, scaling,
                   number_of_slices, along_rows=False)  # fmt: skip


def get_y_slices_data(
    image, x_axis, y_axis, y_center, y_standard_deviation, scaling=2, number_of_slices=11
):
    """([([center_x, center_y], sigma, intensity) per band], slice_length) of horizontal
    bands along y, each band's x profile fitted."""
    return _slices(image, y_axis, x_axis, y_center, y_standard_deviation, scaling,
                   number_of_slices, along_rows=True)  # fmt: skip


def _slices(image, along, across, center, sigma, scaling, count, along_rows):
    if count % 2 == 0:
        raise ValueError("Number of slices must be odd.")
    bands, length = regions.fitted_bands(
        image,
        (0, image.shape[0], 0, image.shape[1]),
        along,
        across,
        (None, None, float(center), float(sigma)),
        config.Slices(count, float(scaling), "vertical" if along_rows else "horizontal"),
        along_rows,
    )
    return [([x, y], sigma_, intensity) for x, y, sigma_, intensity, _ in bands], length


def linear_fit(x, y):
    """[slope, offset] of the least-squares line through (x, y)."""
    slope, offset, ok = fit.line_fit(measures.as_float(x), measures.as_float(y))
    if not ok:
        raise ValueError("linear_fit needs at least two distinct x values")
    return np.array([slope, offset])


def quadratic_fit(x, y):
    """[a, b, c] of the least-squares parabola a x^2 + b x + c through (x, y)."""
    return np.polyfit(measures.as_float(x), measures.as_float(y), 2)


def get_png_from_image(image_raw_bytes, scale=None, min_value=None, max_value=None,
                       colormap_name=None):  # fmt: skip
    """A PNG of the image as CamServer renders it: averaged down by `scale` (a fraction),
    `min_value` subtracted (negatives to 0), values clipped at `max_value` (after the
    subtraction), divided by the maximum, through the colormap (default rainbow)."""
    image = np.array(image_raw_bytes, dtype=np.float64)
    if scale:
        rows, cols = int(image.shape[0] * scale), int(image.shape[1] * scale)
        image = image.reshape(rows, image.shape[0] // rows, cols, image.shape[1] // cols)
        image = image.mean(-1).mean(1)
    if min_value:
        image -= min_value
        image[image < 0] = 0
    if max_value:
        image[image > max_value] = max_value
    name = colormap_name or png.DEFAULT_COLORMAP
    if name not in png.colormaps():
        raise ValueError(
            f"Unable to apply colormap '{name}'. Available: {', '.join(png.colormaps())}"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        image *= 1.0 / image.max()
    return png.encode(png.to_levels(image), name)


def get_fwhm(x, y):
    return get_fw(x, y, 0.5)


def get_fw(x, y, threshold=0.5, interpolate=True):
    """Width of profile y over axis x at min + (max - min) * threshold, from the maximum out
    to the first points at or below that level (index 0 and the last index included; a side
    that never comes down ends at the axis' end); interpolated between the points around
    each crossing, else between those points. 0.0 for a degenerate profile."""
    values, axis = measures.as_float(y), measures.as_float(x)
    if interpolate:
        return float(measures.full_width(values, axis, threshold))
    if values.size < 2 or not np.isfinite(values).all() or values.max() == values.min():
        return 0.0
    low = values.min()
    below = values - low <= (values.max() - low) * threshold
    peak = int(np.argmax(values))
    left = np.flatnonzero(below[:peak])
    right = np.flatnonzero(below[peak + 1 :])
    first = left[-1] if left.size else 0
    last = peak + 1 + right[0] if right.size else values.size - 1
    return float(abs(axis[last] - axis[first]))


def _gauss(x, offset, amplitude, center, sigma):
    return offset + amplitude * np.exp(-((x - center) ** 2) / (2 * sigma**2))


def _gauss_jacobian(x, offset, amplitude, center, sigma):
    """Derivatives of _gauss by its parameters, one row per parameter."""
    e = np.exp(-((x - center) ** 2) / (2 * sigma**2))
    return np.array(
        [
            np.ones_like(x),
            e,
            amplitude * e * (x - center) / sigma**2,
            amplitude * e * (x - center) ** 2 / sigma**3,
        ]
    )


def gauss_fit_psss(profile, axis, **kwargs):
    """(offset, amplitude, center, |sigma|) of a Gaussian fitted with at most `maxfev` (20)
    evaluations and the analytic Jacobian, from the starting values given as keywords
    (`offset`, `amplitude`, `center`, `standard_deviation`; default: minimum, maximum above
    it, centre of mass, area / (amplitude sqrt(2 pi))); the starting values if `skip` or if
    the fit fails."""
    if axis.shape[0] != profile.shape[0]:
        raise RuntimeError(f"Invalid axis passed {axis.shape[0]} {profile.shape[0]}")
    values = np.asarray(profile, np.float64)
    axis = np.asarray(axis, np.float64)
    offset = kwargs.get("offset", values.min())
    amplitude = kwargs.get("amplitude", values.max() - offset)
    center = kwargs.get("center", np.dot(axis, values) / values.sum())
    area = np.sum((values[1:] + values[:-1] - 2 * offset) * np.diff(axis)) / 2  # trapezoids
    sigma = kwargs.get("standard_deviation", area / (amplitude * np.sqrt(2 * np.pi)))
    start = np.array([offset, amplitude, center, sigma], np.float64)
    if kwargs.get("skip", False):
        return offset, amplitude, center, abs(sigma)
    from scipy.optimize import curve_fit

    try:
        found, _ = curve_fit(
            _gauss,
            axis,
            values,
            p0=start,
            jac=lambda *args: _gauss_jacobian(*args).T,
            maxfev=kwargs.get("maxfev", 20),
        )
    except Exception:  # no convergence within maxfev, or a degenerate profile
        found = start
    offset, amplitude, center, sigma = found
    return offset, amplitude, center, abs(sigma)


def binning(image, x_axis, y_axis, bx, by, mean=False):
    """(image, x_axis, y_axis) binned by bx x by: cropped to whole bins, sums clipped to
    0..65535 (or means), uint16; axes averaged per bin in their own dtype. Any of the three
    may be None."""
    height, width = image.shape if image is not None else (len(y_axis), len(x_axis))
    rows, cols = height // by, width // bx
    if image is not None:
        image = resample.bin_image(image, bx, by, mean)
    if x_axis is not None:
        x_axis = resample.bin_axis(x_axis, bx, cols)
    if y_axis is not None:
        y_axis = resample.bin_axis(y_axis, by, rows)
    return image, x_axis, y_axis


def chunk_copy(image, max_chunk=2000000):
    """A copy of image made in blocks of rows of at most max_chunk bytes (at least one
    row)."""
    out = np.empty_like(image)
    row_bytes = image.shape[1] * image.itemsize if image.ndim > 1 else image.itemsize
    rows = max(1, max_chunk // row_bytes) if row_bytes else len(image)
    for start in range(0, len(image), rows):
        out[start : start + rows] = image[start : start + rows]
    return out


def copy_image(image):
    return chunk_copy(image) if CHUNK_COPY_IMAGES else np.array(image)


def enforce_image_writable(image):
    """image, or a writable copy of it if it is read-only."""
    return image if image.flags.writeable else copy_image(image)
