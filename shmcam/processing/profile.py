"""Measures of one beam profile over its axis, as docs/spec/processing.md defines them literally:
full width at a fraction, centre of mass and rms, good-region bounds, slice bands.

numba, so that the walks along a profile are not Python loops; profiles and axes are float64
and C-contiguous (one compilation each). Axes may be descending (calibrated axes are).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .fit import fitted


def as_float(values: np.ndarray) -> np.ndarray:
    """A profile or axis as the numba functions take it: float64, C-contiguous."""
    return np.ascontiguousarray(values, np.float64)


@njit(cache=True, nogil=True)
def _crossing(axis, profile, i, j, level):
    """Axis value where the line through points i and j of the profile is at level."""
    if profile[j] == profile[i]:
        return axis[i]
    return axis[i] + (level - profile[i]) * (axis[j] - axis[i]) / (profile[j] - profile[i])


@njit(cache=True, nogil=True)
def full_width(profile, axis, fraction):
    """Width at min + (max - min)*fraction, interpolated at both crossings; where the profile
    does not come down to the level before an edge, the width runs to that edge. 0.0 on a
    degenerate profile (fewer than 2 points, flat, or not finite)."""
    n = profile.size
    if n < 2 or not np.isfinite(profile).all():
        return 0.0
    low, high = profile.min(), profile.max()
    if high == low:
        return 0.0
    level = low + (high - low) * fraction
    peak = np.argmax(profile)
    left, right = axis[0], axis[n - 1]
    for i in range(peak - 1, -1, -1):
        if profile[i] <= level:
            left = _crossing(axis, profile, i, i + 1, level)
            break
    for i in range(peak + 1, n):
        if profile[i] <= level:
            right = _crossing(axis, profile, i - 1, i, level)
            break
    return abs(right - left)


@njit(cache=True, nogil=True)
def center_and_rms(profile, axis, offset, mean, sigma):
    """Centre of mass and rms of the profile above the fitted offset, normalised once, then
    without the points more than 5 sigma from the fitted mean."""
    q = profile - offset
    total = q.sum()
    if total != 0:
        q /= total
    limit = 5 * abs(sigma)
    for i in range(q.size):
        if abs(axis[i] - mean) > limit:
            q[i] = 0.0
    center = 0.0
    for i in range(q.size):
        center += axis[i] * q[i]
    spread = 0.0
    for i in range(q.size):
        spread += (axis[i] - center) ** 2 * q[i]
    return center, math.sqrt(abs(spread))


@njit(cache=True, nogil=True)
def measure(profile, axis):
    """Everything the base fields need of one profile: (offset, amplitude, mean, sigma,
    converged, fitted curve, fwhm, centre of mass, rms)."""
    offset, amplitude, mean, sigma, converged, curve = fitted(profile, axis)
    center, rms = center_and_rms(profile, axis, offset, mean, sigma)
    return (
        offset,
        amplitude,
        mean,
        sigma,
        converged,
        curve,
        full_width(profile, axis, 0.5),
        center,
        rms,
    )


@njit(cache=True, nogil=True)
def good_region_bounds(profile, threshold, gfscale):
    """(start, end) indices of the good region: where the profile around its maximum stays at
    or above min + (max - min)*threshold, widened by gfscale, clipped, truncated."""
    n = profile.size
    low, high = profile.min(), profile.max()
    level = low + (high - low) * threshold
    peak = np.argmax(profile)
    start = end = peak
    for i in range(peak - 1, 0, -1):
        if profile[i] < level:
            start = i
            break
    for i in range(peak + 1, n):
        if profile[i] < level:
            end = i
            break
    extend = (end - start) * gfscale - (end - start)
    first = min(max(start - extend / 2, 0.0), n - 1.0)
    last = min(max(end + extend / 2, 0.0), n - 1.0)
    return int(first), int(last)


@njit(cache=True, nogil=True)
def axis_index(axis, value):
    """Index of value on the axis: ascending, the last index whose value is <= value;
    descending, the first one; clamped to the axis."""
    n = axis.size
    if axis[0] > axis[n - 1]:
        for i in range(n):
            if axis[i] <= value:
                return i
        return n - 1
    index = 0
    for i in range(n):
        if axis[i] > value:
            break
        index = i
    return index


@njit(cache=True, nogil=True)
def slice_bounds(axis, center, sigma, count, scale):
    """(boundaries, half band) of count (odd) bands of equal index width centred on center:
    the middle band first, then pairs around it while both stay on the axis. No boundaries
    when the middle band does not fit."""
    n = axis.size
    middle = axis_index(axis, center)
    half = max(1, abs(axis_index(axis, center + scale * sigma / count / 2) - middle))
    if middle - half < 0 or middle + half >= n:
        return np.empty(0, np.int64), half
    pairs = 0
    while (
        2 * pairs + 1 < count
        and middle - half - 2 * half * (pairs + 1) >= 0
        and middle + half + 2 * half * (pairs + 1) < n
    ):
        pairs += 1
    first = middle - half - 2 * half * pairs
    return first + 2 * half * np.arange(2 * pairs + 2), half
