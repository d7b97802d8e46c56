"""Camera transforms, done once in the camera instance so that every pipeline reads the same frame.

Order (docs/spec/processing.md, "Camera stream channels"): binning, mirror_x, mirror_y, rotate
(quarter turns, counter-clockwise), roi, background. Mirror, rotate and roi are numpy views;
binning and background make new arrays. The axes are linear, x_axis[i] = x0 + i*dx, so the ring
carries four numbers per frame instead of two arrays. As CamServer does, they are pixel numbers
(or the calibration) of the binned and rotated image, sliced by the roi; mirroring the camera
corrects its optics and leaves the axes alone.
"""

from __future__ import annotations

import math

import numpy as np

from .config import CALIBRATION

Axes = tuple[float, float, float, float]
PIXEL_AXES: Axes = (0.0, 1.0, 0.0, 1.0)


def bins(config: dict) -> tuple[int, int]:
    return int(config.get("binning_x") or 1), int(config.get("binning_y") or 1)


def binning(image: np.ndarray, bin_x: int, bin_y: int, mean: bool = False) -> np.ndarray:
    """Sum (or mean) of bin_x × bin_y blocks, the image cropped to whole blocks. Integer images
    give uint16, sums clipped to 0..65535 (docs/spec/processing.md); float images keep their
    type."""
    height, width = image.shape[0] // bin_y, image.shape[1] // bin_x
    blocks = image[: height * bin_y, : width * bin_x].reshape(height, bin_y, width, bin_x)
    if image.dtype.kind == "f":
        return (
            blocks.mean(axis=(1, 3), dtype=image.dtype)
            if mean
            else blocks.sum(axis=(1, 3), dtype=image.dtype)
        )
    total = blocks.sum(axis=(1, 3), dtype=np.int64)
    if mean:
        total //= bin_x * bin_y
    return np.clip(total, 0, 65535).astype(np.uint16)


def clip_roi(roi, width: int, height: int) -> tuple[int, int, int, int]:
    """[offset_x, size_x, offset_y, size_y] fitted into the image: sizes clipped to it, then
    offsets clipped to [0, shape - size] (the rule of docs/spec/processing.md)."""
    offset_x, size_x, offset_y, size_y = (int(v) for v in roi)
    size_x, size_y = min(size_x, width), min(size_y, height)
    return (
        min(max(offset_x, 0), width - size_x),
        size_x,
        min(max(offset_y, 0), height - size_y),
        size_y,
    )


def subtract_background(image: np.ndarray, background: np.ndarray) -> np.ndarray:
    """image − background where the image is brighter, 0 elsewhere; the image's dtype kept."""
    if background.shape != image.shape:
        raise ValueError(
            f"background shape {background.shape} does not match the "
            f"transformed image {image.shape}"
        )
    result = np.zeros(image.shape, image.dtype)
    np.subtract(image, background, out=result, where=image > background, casting="unsafe")
    return result


def transform(image: np.ndarray, config: dict, background: np.ndarray | None = None):
    """The camera's frame from the source's frame (the same array if nothing is configured)."""
    bin_x, bin_y = bins(config)
    if bin_x > 1 or bin_y > 1:
        image = binning(image, bin_x, bin_y, bool(config.get("binning_mean")))
    if config.get("mirror_x"):
        image = image[:, ::-1]
    if config.get("mirror_y"):
        image = image[::-1]
    turns = int(config.get("rotate") or 0) % 4
    if turns:
        image = np.rot90(image, turns)
    if config.get("roi"):
        offset_x, size_x, offset_y, size_y = clip_roi(config["roi"], image.shape[1], image.shape[0])
        rows, columns = slice(offset_y, offset_y + size_y), slice(offset_x, offset_x + size_x)
        if background is not None and background.shape == image.shape:
            background = background[rows, columns]  # CamServer's: taken before the roi
        image = image[rows, columns]
    if background is not None:
        image = subtract_background(image, background)
    return image


def calibration(config: dict) -> tuple[float, float, float, float] | None:
    """(origin_x, pixel_x, origin_y, pixel_y) of `camera_calibration`, or None without one.

    origin is the integer centre of the reference marker, the pixel size its width over its
    size in pixels times cos(angle); null values take the defaults."""
    given = config.get("camera_calibration")
    if not given:
        return None
    cal = {**CALIBRATION, **{k: v for k, v in given.items() if v is not None}}
    left, upper, right, lower = cal["reference_marker"]
    return (
        int((right - left) / 2 + left),
        cal["reference_marker_width"]
        / (right - left)
        * math.cos(math.radians(cal["angle_horizontal"])),
        int((lower - upper) / 2 + upper),
        cal["reference_marker_height"]
        / (lower - upper)
        * math.cos(math.radians(cal["angle_vertical"])),
    )


def camera_axes(config: dict, width: int, height: int) -> Axes:
    """(x0, dx, y0, dy) of the transformed image of a width × height source frame.

    Pixel numbers, or with a calibration x_axis[i] = −(i − origin_x)·pixel_x (descending),
    over the binned and rotated image; a roi keeps the numbers of the pixels it shows."""
    bin_x, bin_y = bins(config)
    width, height = width // bin_x, height // bin_y
    if int(config.get("rotate") or 0) % 2:
        width, height = height, width
    offset_x, offset_y = 0, 0
    if config.get("roi"):
        offset_x, _, offset_y, _ = clip_roi(config["roi"], width, height)
    cal = calibration(config)
    if cal is None:
        return float(offset_x), 1.0, float(offset_y), 1.0
    origin_x, pixel_x, origin_y, pixel_y = cal
    return (origin_x - offset_x) * pixel_x, -pixel_x, (origin_y - offset_y) * pixel_y, -pixel_y


def axis_arrays(width: int, height: int, axes: Axes | None) -> tuple[np.ndarray, np.ndarray]:
    """float32 x and y axes from linear axes (None: pixel numbers)."""
    x0, dx, y0, dy = axes or PIXEL_AXES
    return (
        (x0 + dx * np.arange(width)).astype(np.float32),
        (y0 + dy * np.arange(height)).astype(np.float32),
    )


def linear_axes(x_axis, y_axis) -> Axes | None:
    """(x0, dx, y0, dy) if both axes are evenly spaced (to float32 precision), else None."""
    found = []
    for axis in (x_axis, y_axis):
        axis = np.asarray(axis, np.float64).ravel()
        if not len(axis):
            return None
        step = (axis[-1] - axis[0]) / (len(axis) - 1) if len(axis) > 1 else 1.0
        line = axis[0] + step * np.arange(len(axis))
        if not np.allclose(axis, line, rtol=1e-6, atol=1e-6 * abs(step)):
            return None
        found += [float(axis[0]), float(step)]
    return tuple(found)


class CameraTransform:
    """One camera config's transforms and axes, with its background converted once to the
    frames' dtype (not per frame)."""

    def __init__(self, config: dict, background: np.ndarray | None = None):
        self.config = config
        # Whether raw pixels move: a source's own axes then no longer describe the image.
        self.geometric = bool(
            bins(config) != (1, 1)
            or config.get("mirror_x")
            or config.get("mirror_y")
            or int(config.get("rotate") or 0) % 4
            or config.get("roi")
        )
        self._background = background
        self._axes_key = self._axes = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        background = self._background
        if background is not None and background.dtype != image.dtype:
            background = self._background = background.astype(image.dtype)
        return transform(image, self.config, background)

    def axes(self, width: int, height: int, source_axes: Axes | None = None) -> Axes:
        """The axes of the transformed frame: the source's own when the camera keeps its
        geometry and has no calibration, else camera_axes (cached per frame size)."""
        if (
            source_axes is not None
            and not self.geometric
            and not self.config.get("camera_calibration")
        ):
            return source_axes
        if self._axes_key != (width, height):
            self._axes_key, self._axes = (width, height), camera_axes(self.config, width, height)
        return self._axes
