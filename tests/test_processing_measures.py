"""The profile measures of docs/spec/processing.md on hand-made profiles, with values worked out by
hand from the spec's definitions; the Gaussian fit against analytic Gaussians."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shmcam.processing.fit import exp_negative, gauss_curve, gauss_fit, line_fit
from shmcam.processing.profile import (
    axis_index,
    center_and_rms,
    full_width,
    good_region_bounds,
    slice_bounds,
)


def f64(*values):
    return np.array(values, np.float64)


def gaussian(axis, offset, amplitude, mean, sigma):
    return offset + amplitude * np.exp(-((axis - mean) ** 2) / (2 * sigma**2))


STEP = np.arange(7.0)
PEAK = f64(0, 1, 3, 5, 3, 1, 0)  # min 0, max 5: half maximum 2.5


def test_full_width_interpolates_both_crossings():
    # left: p[1] = 1 <= 2.5 < p[2] = 3 -> 1 + 1.5/2 = 1.75; right: 4 + 0.5/2 = 4.25
    assert full_width(PEAK, STEP, 0.5) == pytest.approx(2.5)
    # at a quarter (level 1.25): 1 + 0.25/2 = 1.125 and 4 + 1.75/2 = 4.875
    assert full_width(PEAK, STEP, 0.25) == pytest.approx(3.75)
    # axis units, descending (calibrated) axis: the same crossings, 2 units per pixel
    assert full_width(PEAK, 20 - 2 * STEP, 0.5) == pytest.approx(5.0)


def test_full_width_runs_to_the_edge_where_the_profile_stays_high():
    # maximum at index 0: no left crossing, the width starts at the edge
    assert full_width(f64(5, 3, 1, 0, 0), STEP[:5], 0.5) == pytest.approx(1.25)
    # first maximum at 2; left crossing at 1 + 1.5/4; the right never comes down to 2.5
    assert full_width(f64(0, 1, 5, 5, 4), STEP[:5], 0.5) == pytest.approx(4 - 1.375)


def test_full_width_of_degenerate_profiles_is_zero():
    assert full_width(f64(3, 3, 3), STEP[:3], 0.5) == 0.0
    assert full_width(f64(7), STEP[:1], 0.5) == 0.0
    assert full_width(f64(0, 1, np.nan, 1), STEP[:4], 0.5) == 0.0


def test_center_and_rms_follow_the_spec_literally():
    profile, axis = f64(1, 2, 5, 2, 1), STEP[:5]
    # q = p - 1 = [0, 1, 4, 1, 0], normalised by 6: centre 2, variance (1 + 1)/6
    center, rms = center_and_rms(profile, axis, 1.0, 2.0, 0.5)
    assert center == pytest.approx(2.0) and rms == pytest.approx(math.sqrt(1 / 3))
    # sigma 0.1: points farther than 0.5 from the mean are dropped, NOT normalised again:
    # q = [0, 0, 4/6, 0, 0] -> centre 2 * 4/6, rms = sqrt((2 - 4/3)^2 * 4/6)
    center, rms = center_and_rms(profile, axis, 1.0, 2.0, 0.1)
    assert center == pytest.approx(4 / 3) and rms == pytest.approx(math.sqrt(8 / 27))
    # no normalisation when the sum is 0
    center, rms = center_and_rms(f64(3, 3), STEP[:2], 3.0, 0.0, 1.0)
    assert (center, rms) == (0.0, 0.0)


def test_good_region_bounds_extend_and_truncate():
    profile = f64(0, 0, 1, 4, 9, 10, 8, 3, 1, 0, 0, 0)
    # level 3; start 2 (p=1 < 3), end 8 (p=3 is not below 3); ext = 6*1.5 - 6 = 3;
    # start 0.5 -> 0, end 9.5 -> 9 (truncated, not rounded to 10)
    assert good_region_bounds(profile, 0.3, 1.5) == (0, 9)
    # gfscale 1.8: ext 4.8: start -0.4 clipped to 0, end 10.4 -> 10
    assert good_region_bounds(profile, 0.3, 1.8) == (0, 10)
    # the walk down stops at index 1: p[0] is never looked at, start stays at the maximum
    # (2); end 4; ext = 2*1.8 - 2 = 1.6: start 1.2 -> 1, end 4.8 clipped to 4
    assert good_region_bounds(f64(0, 5, 10, 5, 0), 0.3, 1.8) == (1, 4)
    assert good_region_bounds(f64(4, 4, 4), 0.3, 1.8) == (0, 0)  # flat: empty


def test_axis_index():
    ascending, descending = f64(0, 1, 2, 3), f64(3, 2, 1, 0)
    assert [axis_index(ascending, v) for v in (1.5, 2.0, -1.0, 9.0)] == [1, 2, 0, 3]
    assert [axis_index(descending, v) for v in (1.5, 2.0, 9.0, -1.0)] == [2, 1, 0, 3]


def test_slice_bounds():
    axis = np.arange(100.0)
    # size = 2*10/5 = 4: centre index 50, index(52) = 52, half 2; middle band [48, 52],
    # then pairs 4 wide while they fit and fewer than 5 bands exist
    bounds, half = slice_bounds(axis, 50.0, 10.0, 5, 2.0)
    assert list(bounds) == [40, 44, 48, 52, 56, 60] and half == 2
    bounds, _ = slice_bounds(axis, 5.0, 10.0, 5, 2.0)  # the first pair would start at -1
    assert list(bounds) == [3, 7]
    bounds, _ = slice_bounds(axis, 1.0, 10.0, 5, 2.0)  # the middle band does not fit
    assert list(bounds) == []
    bounds, half = slice_bounds(axis, 50.0, 0.1, 3, 2.0)  # less than a pixel: half 1
    assert list(bounds) == [47, 49, 51, 53] and half == 1
    # descending, one band 2*2/1 wide: centre 50 is index 49, 50 + 4/2 is index 47
    bounds, half = slice_bounds(99 - axis, 50.0, 2.0, 1, 2.0)
    assert list(bounds) == [47, 51] and half == 2


@pytest.mark.parametrize(
    "axis", [np.linspace(-3, 5, 161), np.linspace(5, -3, 161)], ids=["ascending", "descending"]
)
def test_gauss_fit_recovers_an_analytic_gaussian(axis):
    profile = gaussian(axis, 12.0, 300.0, 0.7, 0.45)
    offset, amplitude, mean, sigma, converged = gauss_fit(profile, axis)
    assert converged
    assert (offset, amplitude, mean, sigma) == pytest.approx((12.0, 300.0, 0.7, 0.45), rel=1e-9)
    assert np.allclose(gauss_curve(axis, offset, amplitude, mean, sigma), profile)


def test_gauss_fit_on_a_noisy_beam_profile():
    axis = np.arange(2000.0)
    rng = np.random.default_rng(7)
    profile = gaussian(axis, 5e3, 4e6, 1041.3, 150.0) + rng.normal(0, 2e4, axis.size)
    offset, amplitude, mean, sigma, converged = gauss_fit(profile, axis)
    assert converged
    assert mean == pytest.approx(1041.3, abs=0.5) and sigma == pytest.approx(150.0, rel=0.005)
    assert amplitude == pytest.approx(4e6, rel=0.005) and offset == pytest.approx(5e3, abs=3e3)


def test_failed_fits_report_the_starting_values():
    # 3 points (fewer than the 4 parameters): offset0 1, amplitude0 2, mean0 a[argmax] = 1,
    # sigma0 = trapezoid of (p - 1) = 1 + 1.5, over (2 * sqrt(2 pi))
    start = (1.0, 2.0, 1.0, 2.5 / (2 * math.sqrt(2 * math.pi)))
    *values, converged = gauss_fit(f64(1, 3, 2), STEP[:3])
    assert values == pytest.approx(start) and not converged
    *values, converged = gauss_fit(f64(1, 3, np.nan, 2, 1), STEP[:5])
    assert not converged
    # a flat profile is fitted exactly by the start: amplitude 0, sigma 1
    assert gauss_fit(np.full(6, 4.0), STEP[:6]) == (4.0, 0.0, 0.0, 1.0, True)


def test_exp_negative_is_exp_to_the_last_bit_or_so():
    x = np.concatenate([-np.geomspace(1e-12, 700, 3000), np.linspace(-40, 0, 3001)])
    values = np.array([exp_negative(v) for v in x])
    assert np.allclose(values, np.exp(x), rtol=4e-16, atol=0)
    assert [exp_negative(v) for v in (0.0, -746.0, -1e300, -np.inf)] == [1.0, 0.0, 0.0, 0.0]
    assert np.isnan(exp_negative(np.nan))


def test_line_fit():
    slope, offset, ok = line_fit(f64(1, 2, 3), f64(2, 4, 6.5))
    assert ok and slope == pytest.approx(2.25) and offset == pytest.approx(-1 / 3)
    assert not line_fit(f64(1), f64(2))[2]
    assert not line_fit(f64(1, 1), f64(2, 3))[2]
