"""The pre-processing chain of docs/spec/processing.md, from a camera frame to the pre-processed
image with its axes, profiles and extremes (the pixel pass yields those at no extra cost).

Order: averaging, binning, background, mirror, rotation, ROI, threshold, image_averaging,
scale/offset. Mirror, quarter turns and ROI are index bookkeeping (orientation.py);
background, threshold and scale/offset are applied per pixel in the same numba pass that sums
the profiles. The frame handed in is never written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import kernels, resample
from .averaging import BlockMean, MovingMean
from .config import Settings
from .orientation import Orientation


class BackgroundError(ValueError):
    """The configured background cannot be used on this frame (none loaded, another shape):
    CamServer's notify_on_error case."""


@dataclass
class Prepared:
    """A pre-processed frame. Pixel (i, j) of `image` is `base[rect[0] + i, rect[2] + j]`, base
    being C-contiguous: the kernels read the image there, without a copy."""

    image: np.ndarray
    base: np.ndarray
    rect: tuple[int, int, int, int]
    x_axis: np.ndarray
    y_axis: np.ndarray
    x_profile: np.ndarray
    y_profile: np.ndarray
    min_value: object
    max_value: object


@dataclass
class Pass:
    """What a pixel pass over a rectangle made: the written pixels (None if none were to be
    changed), the rectangle's column and row sums and the extremes of its pixels (None if
    not summed)."""

    out: np.ndarray | None
    cols: np.ndarray | None
    rows: np.ndarray | None
    low: object
    high: object


def whole(array: np.ndarray) -> tuple[int, int, int, int]:
    return 0, array.shape[0], 0, array.shape[1]


def accumulator(dtype) -> type:
    """The dtype of the profiles of an image of dtype: int64, or float64 for float images."""
    return np.int64 if np.dtype(dtype).kind in "iub" else np.float64


def _extremes(dtype) -> tuple:
    """(max, min) of dtype as scalars of it: where the kernel's min and max start."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return dtype.type(np.inf), dtype.type(-np.inf)
    info = np.iinfo(dtype)
    return dtype.type(info.max), dtype.type(info.min)


def pixel_pass(
    source, rect, background=None, clamp=False, threshold=None, affine=None, summed=True
) -> Pass:
    """kernels.pixel_pass with its arrays made: out in the dtype the operations give (int32
    for a signed background subtraction, float for scale/offset). For integer images the
    threshold compares as the integer it amounts to (v < t is v < ceil(t)), so that the
    pass stays in integers."""
    dtype = source.dtype
    if background is not None and not clamp:
        dtype = np.dtype(np.int32)
    if affine is not None:
        dtype = np.result_type(dtype, 1.0)
    if threshold is not None:
        threshold = _typed_threshold(threshold, source.dtype)
    height, width = rect[1] - rect[0], rect[3] - rect[2]
    changed = background is not None or threshold is not None or affine is not None
    out = np.empty((height, width), dtype) if changed else None
    # A store that may round (float32 after float64 arithmetic) or wrap (a signed
    # subtraction) is read back: the profiles are the sums of the image as it is.
    readback = (background is not None and not clamp) or (
        dtype.kind == "f"
        and (dtype.itemsize < 8 and (background is not None or affine is not None))
    )
    cols = rows = None
    if summed:
        # 16-bit pixels cannot overflow int32 sums of up to 32768 of them, and int32 sums
        # take half the vector lanes of int64 ones
        narrow = dtype.kind in "iub" and dtype.itemsize <= 2 and max(height, width) <= 32768
        acc = np.int32 if narrow else accumulator(dtype)
        cols, rows = np.zeros(width, acc), np.zeros(height, acc)
    low, high = kernels.pixel_pass(
        source,
        rect,
        background,
        clamp,
        threshold,
        affine,
        out,
        readback,
        cols,
        rows,
        _extremes(dtype),
    )
    if not summed:
        return Pass(out, None, None, None, None)
    if low > high:  # no pixel but NaN
        low = high = np.nan
    return Pass(
        out,
        cols.astype(accumulator(dtype)),
        rows.astype(accumulator(dtype)),
        dtype.type(low),
        dtype.type(high),
    )


def _typed_threshold(threshold: float, dtype: np.dtype):
    """The threshold as the kernel compares it: for integer pixels the integer it amounts to
    (v < t is v < ceil(t)), in the pixels' own type where it fits, so that the comparison
    vectorises over narrow lanes (a uint16 frame compares 4x as many pixels per instruction
    as against an int64)."""
    if dtype.kind not in "iu":
        return np.float64(threshold)
    whole = math.ceil(threshold)
    info = np.iinfo(dtype)
    return dtype.type(whole) if info.min <= whole <= info.max else np.int64(whole)


def integer_background(background, clamp) -> np.ndarray:
    """A background for integer images, in whole counts (rounded) as int32, so that the
    subtraction stays in integers; a subtraction clamped at 0 takes no negative one."""
    low = 0 if clamp else np.iinfo(np.int32).min
    counts = np.rint(np.nan_to_num(background))
    return np.clip(counts, low, np.iinfo(np.int32).max).astype(np.int32)


class Preprocessor:
    """Runs the chain for one config; holds that config's averaging state."""

    def __init__(self, settings: Settings):
        self.settings = settings
        n = settings.averaging
        self.frames = BlockMean(n) if n > 1 else MovingMean(-n) if n < -1 else None
        n = settings.image_averaging
        self.images = MovingMean(n) if n > 1 else None
        self.clamp = settings.background_mode == "subtract"
        self.affine = None
        if settings.scale is not None or settings.offset is not None:
            self.affine = (
                1.0 if settings.scale is None else float(settings.scale),
                float(settings.offset or 0.0),
            )
        self._background = (None, None, None)  # (as handed in, image kind, as converted)

    def __call__(self, image, x_axis, y_axis, background=None) -> Prepared | None:
        """The pre-processed frame, or None while `averaging` collects frames."""
        s = self.settings
        if self.frames is not None:
            image = self.frames.add(image)
            if image is None:
                return None
        if s.binning != (1, 1):
            image, x_axis, y_axis = resample.binned(
                image, x_axis, y_axis, *s.binning, s.binning_mean
            )
        background = self._subtrahend(background, image)
        orientation = Orientation().mirrored(s.mirror_x, s.mirror_y)
        if s.rotation is not None:  # resampled: the mirror and background go in first
            if background is not None:
                image = pixel_pass(image, whole(image), background, self.clamp, summed=False).out
            image = resample.rotated(np.ascontiguousarray(orientation.view(image)), s.rotation)
            x_axis, y_axis = (
                orientation.along_x(x_axis, y_axis),
                orientation.along_y(x_axis, y_axis),
            )
            background, orientation = None, Orientation()
        orientation = orientation.turned(s.quarter_turns)
        rect = orientation.rect(s.roi, image.shape)
        x_axis, y_axis = x_axis[rect[2] : rect[3]], y_axis[rect[0] : rect[1]]
        x_axis, y_axis = orientation.along_x(x_axis, y_axis), orientation.along_y(x_axis, y_axis)
        threshold = s.threshold
        if self.images is not None:
            image, rect = self._averaged(image, rect, background)
            background = threshold = None
        result = pixel_pass(image, rect, background, self.clamp, threshold, self.affine)
        base, rect = (image, rect) if result.out is None else (result.out, whole(result.out))
        final = base[rect[0] : rect[1], rect[2] : rect[3]]
        if not orientation.identity:
            final = base = np.ascontiguousarray(orientation.view(final))
            rect = whole(base)
        return Prepared(
            final,
            base,
            rect,
            x_axis,
            y_axis,
            orientation.along_x(result.cols, result.rows),
            orientation.along_y(result.cols, result.rows),
            result.low,
            result.high,
        )

    def _averaged(self, image, rect, background):
        """The running mean of the rectangle after background and threshold, and its rect."""
        if background is not None or self.settings.threshold is not None:
            image = pixel_pass(
                image, rect, background, self.clamp, self.settings.threshold, summed=False
            ).out
        else:
            image = image[rect[0] : rect[1], rect[2] : rect[3]]
        mean = self.images.add(image)
        return mean, whole(mean)

    def _subtrahend(self, background, image):
        """The background to subtract from image (None for none, or passive), checked
        against it, and converted for the kernel once (not per frame)."""
        s = self.settings
        if s.background_mode is None:
            return None
        if background is None:
            raise BackgroundError(
                f"image_background_enable is set but no background was loaded "
                f"(image_background: {s.background!r})"
            )
        if background.shape != image.shape:
            raise BackgroundError(
                f"background {s.background!r} has shape {background.shape}, the "
                f"image {image.shape}: take a background with this geometry"
            )
        if s.background_mode == "passive":
            return None
        given, kind, converted = self._background
        if given is not background or kind != image.dtype.kind:
            converted = (
                integer_background(background, self.clamp)
                if image.dtype.kind in "iu"
                else np.ascontiguousarray(background, np.float64)
            )
            self._background = (background, image.dtype.kind, converted)
        return converted
