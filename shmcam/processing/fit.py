"""Least-squares fits in numba (scipy is not a dependency): a profile's Gaussian, and a line.

The Gaussian fit is Levenberg-Marquardt with MINPACK's scaled damping and its ftol/xtol tests
(scipy's curve_fit runs MINPACK), from the starting values of docs/spec/processing.md. A fit that
does not converge reports those starting values, as CamServer does when curve_fit gives up.
Profiles and axes are float64 and C-contiguous (gauss_fits converts), so each compiles once.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

TOLERANCE = 1.49012e-8  # curve_fit's ftol and xtol
MAX_EVALUATIONS = 200  # trial points; beam profiles converge within about 5
DAMPING_START, DAMPING_MAX = 1e-3, 1e16
# Sums may be reordered (vectorised); NaN and inf keep their meaning (no "nnan", "ninf").
REORDER = {"reassoc", "contract", "arcp"}
# exp_negative: x = k ln2 + r with |r| <= ln2/2 (Cody-Waite), exp(r) by its Taylor series to
# r^12 (truncation below 2e-16), 2^k from a table
LOG2_E, LN2_HIGH, LN2_LOW = 1.4426950408889634, 6.93147180369123816490e-01, 1.9082149292705877e-10
TAYLOR = tuple(1.0 / math.factorial(n) for n in range(12, -1, -1))  # highest power first
POWERS_OF_2 = 2.0 ** np.arange(-1075, 1)  # 2^-1075 rounds to 0: exp(-745) and below


@njit(cache=True, nogil=True, fastmath={"contract"})
def exp_negative(x):
    """exp(x) for x <= 0 (to 1 ulp; NaN stays NaN) without a libm call, so that loops over it
    vectorise: fits spend most of their time in the exponential, and run 1.5x faster so."""
    clamped = min(max(x, -745.0), 0.0)
    k = math.floor(clamped * LOG2_E + 0.5)
    r = (clamped - k * LN2_HIGH) - k * LN2_LOW
    series = TAYLOR[0]
    for n in range(1, len(TAYLOR)):
        series = series * r + TAYLOR[n]
    value = series * POWERS_OF_2[int(k) + 1075]  # a valid index even for NaN
    return value if x == x else x


@njit(cache=True, nogil=True)
def start_values(profile, axis):
    """The spec's (offset, amplitude, mean, sigma) to start from: minimum, maximum above it,
    axis at the maximum, area / (amplitude sqrt(2 pi)) (1 if flat). profile is not empty."""
    peak = np.argmax(profile)
    offset = profile.min()
    amplitude = profile[peak] - offset
    if amplitude == 0:
        return offset, amplitude, axis[peak], 1.0
    area = 0.0  # trapezoid integral of (profile - offset) over the axis
    for i in range(1, profile.size):
        area += (axis[i] - axis[i - 1]) * (profile[i] + profile[i - 1] - 2 * offset) / 2
    return offset, amplitude, axis[peak], area / (amplitude * math.sqrt(2 * math.pi))


@njit(cache=True, nogil=True, fastmath=REORDER)
def _evaluate(profile, axis, x, jtj, jtr, gauss):
    """Sum of squared residuals at parameters x; fills J^T J and J^T r there. The Gaussian
    goes into the scratch array gauss first: both loops then vectorise."""
    offset, amplitude, mean, sigma = x[0], x[1], x[2], x[3]
    inverse = 1.0 / (sigma * sigma)
    for i in range(profile.size):
        d = axis[i] - mean
        gauss[i] = exp_negative(-0.5 * d * d * inverse)
    s12 = s13 = s14 = s22 = s23 = s24 = s33 = s34 = s44 = 0.0
    g1 = g2 = g3 = g4 = sse = 0.0
    for i in range(profile.size):
        d = axis[i] - mean
        e = gauss[i]
        r = profile[i] - (offset + amplitude * e)
        d_mean = amplitude * e * d * inverse  # derivatives of the model
        d_sigma = d_mean * d / sigma
        sse += r * r
        s12 += e
        s13 += d_mean
        s14 += d_sigma
        s22 += e * e
        s23 += e * d_mean
        s24 += e * d_sigma
        s33 += d_mean * d_mean
        s34 += d_mean * d_sigma
        s44 += d_sigma * d_sigma
        g1 += r
        g2 += e * r
        g3 += d_mean * r
        g4 += d_sigma * r
    jtj[0, 0], jtj[0, 1], jtj[0, 2], jtj[0, 3] = profile.size, s12, s13, s14
    jtj[1, 0], jtj[1, 1], jtj[1, 2], jtj[1, 3] = s12, s22, s23, s24
    jtj[2, 0], jtj[2, 1], jtj[2, 2], jtj[2, 3] = s13, s23, s33, s34
    jtj[3, 0], jtj[3, 1], jtj[3, 2], jtj[3, 3] = s14, s24, s34, s44
    jtr[0], jtr[1], jtr[2], jtr[3] = g1, g2, g3, g4
    return sse


@njit(cache=True, nogil=True)
def _solve(m, b):
    """Solution of the small system m x = b (Gaussian elimination, partial pivoting; m and b
    are overwritten), and whether m was regular."""
    n = b.size
    for k in range(n):
        pivot = k + np.argmax(np.abs(m[k:, k]))
        if not abs(m[pivot, k]) > 0:  # zero or NaN
            return b, False
        if pivot != k:
            for j in range(n):
                m[k, j], m[pivot, j] = m[pivot, j], m[k, j]
            b[k], b[pivot] = b[pivot], b[k]
        for i in range(k + 1, n):
            factor = m[i, k] / m[k, k]
            for j in range(k, n):
                m[i, j] -= factor * m[k, j]
            b[i] -= factor * b[k]
    for k in range(n - 1, -1, -1):
        for j in range(k + 1, n):
            b[k] -= m[k, j] * b[j]
        b[k] /= m[k, k]
    return b, True


@njit(cache=True, nogil=True)
def _scaled_norm(v, scale):
    total = 0.0
    for k in range(v.size):
        total += scale[k] * v[k] * v[k]
    return math.sqrt(total)


@njit(cache=True, nogil=True)
def _quadratic(m, v):
    """v^T m v (numba's np.dot needs scipy's BLAS)."""
    total = 0.0
    for i in range(v.size):
        for j in range(v.size):
            total += v[i] * m[i, j] * v[j]
    return total


@njit(cache=True, nogil=True)
def _least_squares(profile, axis, x):
    """Levenberg-Marquardt from x (updated in place); True when it converged."""
    jtj, jtr = np.empty((4, 4)), np.empty(4)
    trial_jtj, trial_jtr = np.empty((4, 4)), np.empty(4)
    gauss = np.empty(profile.size)
    scale = np.zeros(4)  # MINPACK's diag: the largest column norms seen so far
    sse = _evaluate(profile, axis, x, jtj, jtr, gauss)
    damping = DAMPING_START
    for _ in range(MAX_EVALUATIONS):
        if not math.isfinite(sse):
            return False
        if sse == 0.0:
            return True
        for k in range(4):
            scale[k] = max(scale[k], jtj[k, k])
        m = jtj.copy()
        for k in range(4):
            m[k, k] += damping * scale[k]
        step, regular = _solve(m, jtr.copy())
        if not regular:
            damping *= 10.0
            if damping > DAMPING_MAX:
                return False
            continue
        trial = x + step
        trial_sse = _evaluate(profile, axis, trial, trial_jtj, trial_jtr, gauss)
        # MINPACK's tests: relative reductions (actual and predicted), relative step size
        predicted = (_quadratic(jtj, step) + 2 * damping * _scaled_norm(step, scale) ** 2) / sse
        actual = (sse - trial_sse) / sse
        small_step = _scaled_norm(step, scale) <= TOLERANCE * _scaled_norm(x, scale)
        small_change = abs(actual) <= TOLERANCE and predicted <= TOLERANCE
        if trial_sse < sse:
            x[:] = trial
            sse = trial_sse
            jtj, trial_jtj = trial_jtj, jtj
            jtr, trial_jtr = trial_jtr, jtr
            damping = max(damping / 10.0, 1e-15)
        else:
            damping *= 10.0
            if damping > DAMPING_MAX:
                return small_step or small_change
        if small_step or small_change:
            return True
    return False


@njit(cache=True, nogil=True)
def gauss_fit(profile, axis):
    """(offset, amplitude, mean, |sigma|, converged) of offset + amplitude*exp(-(a-mean)^2/2sigma^2)
    fitted to profile over axis; the starting values when the fit fails (converged False)."""
    if profile.size == 0:
        return np.nan, np.nan, np.nan, np.nan, False
    offset, amplitude, mean, sigma = start_values(profile, axis)
    converged = False
    # fewer points than parameters: curve_fit refuses, CamServer reports the starting values
    if profile.size >= 4 and np.isfinite(profile).all() and np.isfinite(axis).all():
        x = np.array([offset, amplitude, mean, sigma])
        converged = _least_squares(profile, axis, x) and np.isfinite(x).all()
        if converged:
            offset, amplitude, mean, sigma = x[0], x[1], x[2], x[3]
    return offset, amplitude, mean, abs(sigma), converged


@njit(cache=True, nogil=True)
def gauss_fits(profiles, axis):
    """gauss_fit of each row of profiles (of any number type) over the axis, in one call:
    arrays of the means, sigmas and convergence flags."""
    count = profiles.shape[0]
    means, sigmas, converged = np.empty(count), np.empty(count), np.empty(count, np.bool_)
    for k in range(count):
        _, _, mean, sigma, ok = gauss_fit(profiles[k].astype(np.float64), axis)
        means[k], sigmas[k], converged[k] = mean, sigma, ok
    return means, sigmas, converged


@njit(cache=True, nogil=True)
def gauss_curve(axis, offset, amplitude, mean, sigma):
    """The Gaussian evaluated on the axis (float64); sigma 0 is a spike at the mean."""
    curve = np.empty(axis.size)
    for i in range(axis.size):
        d = axis[i] - mean
        e = exp_negative(-0.5 * d * d / (sigma * sigma)) if sigma != 0 else (1.0 if d == 0 else 0.0)
        curve[i] = offset + amplitude * e
    return curve


@njit(cache=True, nogil=True)
def fitted(profile, axis):
    """gauss_fit's (offset, amplitude, mean, sigma, converged) and the fitted curve."""
    offset, amplitude, mean, sigma, converged = gauss_fit(profile, axis)
    return (
        offset,
        amplitude,
        mean,
        sigma,
        converged,
        gauss_curve(axis, offset, amplitude, mean, sigma),
    )


@njit(cache=True, nogil=True)
def line_fit(x, y):
    """(slope, offset, ok) of the least-squares line y = slope*x + offset; not ok with fewer
    than two distinct x."""
    n = x.size
    if n < 2:
        return np.nan, np.nan, False
    mean_x, mean_y = x.mean(), y.mean()
    sxx = sxy = 0.0
    for i in range(n):
        sxx += (x[i] - mean_x) ** 2
        sxy += (x[i] - mean_x) * (y[i] - mean_y)
    if sxx == 0:
        return np.nan, np.nan, False
    slope = sxy / sxx
    return slope, mean_y - slope * mean_x, True
