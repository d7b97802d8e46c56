"""The processing keys of a pipeline config (docs/spec/processing.md), parsed with their defaults.

The standard function runs from these settings, and the supervisor validates configs with the
same parser: a config accepted when it is set is one the function can run. A null value
never overrides a default. Errors are ValueErrors that name the key. Pure Python: the
supervisor imports this without numba.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GOOD_REGION = {"threshold": 0.3, "gfscale": 1.8}
SLICES = {"number_of_slices": 1, "scale": 2, "orientation": "vertical"}
ORIENTATIONS = ("vertical", "horizontal")
ROTATION_ORDERS = (0, 1)
# Bounds that keep one config from taking the node: averaging keeps this many frames (of up to
# 44 MB each at 2560x2160 float64), and every slice is a Gaussian fit per frame.
MAX_AVERAGING = 100
MAX_SLICES = 101


@dataclass(frozen=True)
class Rotation:
    """Rotation by any angle (counter-clockwise, degrees) about the centre."""

    angle: float
    order: int  # 0 nearest, 1 linear
    fill: float  # the value of points from outside the image


@dataclass(frozen=True)
class GoodRegion:
    threshold: float
    gfscale: float


@dataclass(frozen=True)
class Slices:
    number: int  # odd: an even number_of_slices gets one more, for a middle band
    scale: float
    orientation: str


@dataclass(frozen=True)
class Settings:
    averaging: int = 0  # > 1 block mean, < -1 moving mean, else none
    binning: tuple[int, int] = (1, 1)  # (x, y)
    binning_mean: bool = False
    background: str | None = None  # stored background id
    background_mode: str | None = None  # None, "subtract", "signed" or "passive"
    mirror_x: bool = False
    mirror_y: bool = False
    quarter_turns: int = 0  # "ortho" rotation, counter-clockwise
    rotation: Rotation | None = None  # any other rotation
    roi: tuple[int, int, int, int] | None = None
    threshold: float | None = None  # only when > 0
    image_averaging: int = 1
    scale: float | None = None
    offset: float | None = None
    fw_threshold: float | None = None
    good_region: GoodRegion | None = None
    slices: Slices | None = None


def measures_only(settings: Settings) -> Settings:
    """The settings without the pre-processing steps: for an image pre-processed already."""
    return Settings(
        fw_threshold=settings.fw_threshold,
        good_region=settings.good_region,
        slices=settings.slices,
    )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _get(config: dict, key: str, check, expected: str, default=None, prefix=""):
    """config[key] if it passes check, default if it is missing or null."""
    value = config.get(key)
    if value is None:
        return default
    if not check(value):
        raise ValueError(f"{prefix}{key} must be {expected}, got {value!r}")
    return value


def _number(config, key, default=None, prefix=""):
    return _get(config, key, _is_number, "a number", default, prefix)


def _integer(config, key, default=None, positive=False, prefix="", limit=None):
    """An integer (positive if asked), of magnitude up to `limit` if given."""
    low = 1 if positive else None
    expected = "a positive integer" if positive else "an integer"
    if limit is not None:
        expected = f"an integer from {low if positive else -limit} to {limit}"

    def check(v):
        return _is_integer(v) and (low is None or v >= low) and (limit is None or abs(v) <= limit)

    return _get(config, key, check, expected, default, prefix)


def _flag(config, key):
    return _get(config, key, lambda v: isinstance(v, bool), "true or false", False)


def _section(config, key, defaults) -> dict | None:
    """A sub-dict with its defaults filled in where missing or null; None if not set."""
    section = _get(config, key, lambda v: isinstance(v, dict), "an object")
    if section is None:
        return None
    return {
        name: default if section.get(name) is None else section[name]
        for name, default in defaults.items()
    }


def _is_fill(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


def _rotation(config) -> tuple[int, Rotation | None]:
    """(quarter turns, other rotation) of the `rotation` key: degrees, or
    {"angle", "order", "mode"}; an angle of 0 (or none) is no rotation."""
    value = config.get("rotation")
    if _is_number(value):
        value = {"angle": value}
    elif value is not None and not isinstance(value, dict):
        raise ValueError(
            f"rotation must be a number of degrees or an object "
            f"{{angle, order, mode}}, got {value!r}"
        )
    value = value or {}
    angle = _number(value, "angle", 0, prefix="rotation.")
    order = _get(
        value,
        "order",
        lambda v: _is_integer(v) and v in ROTATION_ORDERS,
        "0 (nearest) or 1 (linear)",
        1,
        prefix="rotation.",
    )
    mode = _get(
        value,
        "mode",
        lambda v: v == "ortho" or _is_fill(v),
        "'ortho' or a fill value such as '0.0'",
        "0.0",
        prefix="rotation.",
    )
    if angle == 0:
        return 0, None
    if mode == "ortho":
        if angle % 90:
            raise ValueError(
                f"rotation.angle must be a multiple of 90 with mode 'ortho', got {angle!r}"
            )
        return int(angle // 90) % 4, None
    return 0, Rotation(float(angle), order, float(mode))


def _roi(config) -> tuple[int, int, int, int] | None:
    def valid(v):
        return (
            isinstance(v, (list, tuple))
            and len(v) == 4
            and all(map(_is_integer, v))
            and v[1] > 0
            and v[3] > 0
        )

    roi = _get(
        config,
        "image_region_of_interest",
        valid,
        "[offset_x, size_x, offset_y, size_y] (integers, sizes > 0)",
    )
    return None if roi is None else tuple(roi)


def _background(config) -> tuple[str | None, str | None]:
    enable = _get(
        config,
        "image_background_enable",
        lambda v: isinstance(v, bool) or v in ("signed", "passive"),
        "true, false, 'signed' or 'passive'",
    )
    background = _get(
        config,
        "image_background",
        lambda v: isinstance(v, str) and v and "/" not in v and v[0] != ".",
        "a stored background id",
    )
    return background, "subtract" if enable is True else enable or None


def _slices(config) -> Slices | None:
    slices = _section(config, "image_slices", SLICES)
    if slices is None:
        return None
    number = _integer(
        slices, "number_of_slices", positive=True, prefix="image_slices.", limit=MAX_SLICES
    )
    scale = _number(slices, "scale", prefix="image_slices.")
    orientation = _get(
        slices,
        "orientation",
        lambda v: v in ORIENTATIONS,
        " or ".join(ORIENTATIONS),
        prefix="image_slices.",
    )
    return Slices(number + 1 - number % 2, float(scale), orientation)


def _good_region(config) -> GoodRegion | None:
    region = _section(config, "image_good_region", GOOD_REGION)
    if region is None:
        return None
    return GoodRegion(
        float(_number(region, "threshold", prefix="image_good_region.")),
        float(_number(region, "gfscale", prefix="image_good_region.")),
    )


def parse(config: dict) -> Settings:
    """The settings of a pipeline config; ValueError naming the first bad key."""
    quarter_turns, rotation = _rotation(config)
    background, background_mode = _background(config)
    threshold = _number(config, "image_threshold")
    return Settings(
        averaging=_integer(config, "averaging", 0, limit=MAX_AVERAGING),
        binning=(
            _integer(config, "binning_x", 1, positive=True),
            _integer(config, "binning_y", 1, positive=True),
        ),
        binning_mean=_flag(config, "binning_mean"),
        background=background,
        background_mode=background_mode,
        mirror_x=_flag(config, "mirror_x"),
        mirror_y=_flag(config, "mirror_y"),
        quarter_turns=quarter_turns,
        rotation=rotation,
        roi=_roi(config),
        threshold=threshold if threshold is not None and threshold > 0 else None,
        image_averaging=_integer(config, "image_averaging", 1, limit=MAX_AVERAGING),
        scale=_number(config, "image_scale"),
        offset=_number(config, "image_offset"),
        fw_threshold=_get(
            config, "fw_threshold", lambda v: _is_number(v) and 0 <= v <= 1, "a number from 0 to 1"
        ),
        good_region=_good_region(config),
        slices=_slices(config),
    )
