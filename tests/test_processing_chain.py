"""Each pre-processing parameter of docs/spec/processing.md, alone and in the chain's order, against
numpy references written from the spec; and the validation of the processing keys."""

from __future__ import annotations

import numpy as np
import pytest

from shmcam.processing.config import parse
from shmcam.processing.preprocess import Preprocessor
from shmcam.supervisor import validation
from shmcam.supervisor.errors import BadRequest

IMAGE = np.arange(24, dtype=np.uint16).reshape(4, 6)


def axes(image):
    return np.arange(image.shape[1], dtype=np.float32), np.arange(image.shape[0], dtype=np.float32)


def prepare(config, image=IMAGE, background=None, preprocessor=None):
    preprocessor = preprocessor or Preprocessor(parse(config))
    return preprocessor(image, *axes(image), background)


def test_the_frame_is_used_as_is_without_pre_processing():
    image = IMAGE.copy()
    image.flags.writeable = False
    frame = prepare({}, image)
    assert np.shares_memory(frame.image, image) and np.array_equal(frame.image, image)
    assert frame.x_profile.dtype == np.int64 and np.array_equal(frame.x_profile, image.sum(0))
    assert np.array_equal(frame.y_profile, image.sum(1))
    assert (frame.min_value, frame.max_value) == (0, 23)
    assert frame.min_value.dtype == np.uint16


def test_binning_sums_clips_or_means_and_averages_the_axes():
    image = np.arange(35, dtype=np.uint16).reshape(5, 7)
    frame = prepare({"binning_x": 2, "binning_y": 2}, image)
    expected = image[:4, :6].reshape(2, 2, 3, 2).sum(axis=(1, 3))  # cropped to whole bins
    assert frame.image.dtype == np.uint16 and np.array_equal(frame.image, expected)
    assert np.array_equal(frame.x_axis, [0.5, 2.5, 4.5]) and frame.x_axis.dtype == np.float32
    assert np.array_equal(frame.y_axis, [0.5, 2.5])
    bright = np.full((2, 2), 20000, np.uint16)
    assert prepare({"binning_x": 2, "binning_y": 2}, bright).image[0, 0] == 65535
    block = np.array([[1, 2], [2, 2]], np.uint16)  # mean 1.75, truncated
    frame = prepare({"binning_x": 2, "binning_y": 2, "binning_mean": True}, block)
    assert frame.image.dtype == np.uint16 and frame.image[0, 0] == 1


def test_background_modes():
    image = np.full((2, 2), 3, np.uint16)
    background = np.array([[1.0, 5.0], [2.4, 0.0]])  # stored backgrounds are means: floats
    config = {"image_background_enable": True, "image_background": "bg"}
    frame = prepare(config, image, background)
    # integer images: the background in whole counts (2.4 -> 2), none above the pixel
    assert frame.image.dtype == np.uint16
    assert np.array_equal(frame.image, [[2, 0], [1, 3]])
    frame = prepare({**config, "image_background_enable": "signed"}, image, background)
    assert frame.image.dtype == np.int32 and np.array_equal(frame.image, [[2, -2], [1, 3]])
    assert np.array_equal(frame.x_profile, [3, 1]) and frame.min_value == -2
    frame = prepare({**config, "image_background_enable": "passive"}, image, background)
    assert np.array_equal(frame.image, image)
    floats = np.array([[3.5, 1.0]], np.float32)
    frame = prepare(config, floats, np.array([[1.25, 2.0]]))
    assert frame.image.dtype == np.float32 and np.array_equal(frame.image, [[2.25, 0.0]])


def test_background_errors_name_the_problem():
    config = {"image_background_enable": True, "image_background": "bg_1"}
    with pytest.raises(
        ValueError,
        match=r"background 'bg_1' has shape \(3, 3\), the image "
        r"\(4, 6\)",
    ):
        prepare(config, IMAGE, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="no background was loaded.*'bg_1'"):
        prepare(config, IMAGE)
    with pytest.raises(ValueError, match="shape"):  # passive checks the shape too
        prepare({**config, "image_background_enable": "passive"}, IMAGE, np.zeros((3, 3)))


BACKGROUND = (IMAGE[::-1] % 7).astype(np.float64)  # a different value on every row


def reference(config, image, x_axis, y_axis):
    """Background, mirror, quarter turns and ROI done the plain numpy way."""
    image = np.maximum(image.astype(np.int64) - BACKGROUND.astype(np.int64), 0)
    if config.get("mirror_x"):
        image, x_axis = image[:, ::-1], x_axis[::-1]
    if config.get("mirror_y"):
        image, y_axis = image[::-1], y_axis[::-1]
    for _ in range(config.get("rotation", {}).get("angle", 0) // 90 % 4):
        image, x_axis, y_axis = np.rot90(image), y_axis, x_axis[::-1]
    offset_x, size_x, offset_y, size_y = config["image_region_of_interest"]
    size_x, size_y = min(size_x, image.shape[1]), min(size_y, image.shape[0])
    offset_x = min(max(offset_x, 0), image.shape[1] - size_x)
    offset_y = min(max(offset_y, 0), image.shape[0] - size_y)
    rows, cols = slice(offset_y, offset_y + size_y), slice(offset_x, offset_x + size_x)
    return image[rows, cols], x_axis[cols], y_axis[rows]


@pytest.mark.parametrize("mirror_x", [False, True])
@pytest.mark.parametrize("mirror_y", [False, True])
@pytest.mark.parametrize("angle", [0, 90, 180, -90])
@pytest.mark.parametrize("roi", [[1, 3, -2, 100], [4, 2, 1, 2]])
def test_mirror_ortho_rotation_and_roi_match_numpy(mirror_x, mirror_y, angle, roi):
    config = {
        "mirror_x": mirror_x,
        "mirror_y": mirror_y,
        "image_background_enable": True,
        "image_background": "b",
        "rotation": {"angle": angle, "mode": "ortho"},
        "image_region_of_interest": roi,
    }
    x_axis = np.linspace(10, 0, 6, dtype=np.float32)  # a descending axis
    y_axis = np.arange(4, dtype=np.float32) * 0.5
    frame = Preprocessor(parse(config))(IMAGE, x_axis, y_axis, BACKGROUND)
    image, x_expected, y_expected = reference(config, IMAGE, x_axis, y_axis)
    assert np.array_equal(frame.image, image)
    assert np.array_equal(frame.x_axis, x_expected) and np.array_equal(frame.y_axis, y_expected)
    assert np.array_equal(frame.x_profile, image.sum(0))
    assert np.array_equal(frame.y_profile, image.sum(1))
    assert (frame.min_value, frame.max_value) == (image.min(), image.max())
    base, (r0, r1, c0, c1) = frame.base, frame.rect
    assert np.array_equal(base[r0:r1, c0:c1], image)  # where the kernels read the image


def test_rotation_by_an_angle_turns_counter_clockwise_about_the_centre():
    image = np.random.default_rng(3).integers(0, 4000, (21, 21)).astype(np.uint16)
    for rotation in (90, {"angle": 90, "order": 0}, {"angle": 90, "order": 1, "mode": "0.0"}):
        assert np.array_equal(prepare({"rotation": rotation}, image).image, np.rot90(image))
    frame = prepare({"mirror_x": True, "rotation": -90}, image)  # mirror first
    assert np.array_equal(frame.image, np.rot90(image[:, ::-1], -1))
    assert np.array_equal(frame.x_axis, np.arange(21)[::-1])
    background = np.arange(441.0).reshape(21, 21)  # and the background
    frame = prepare(
        {"rotation": 90, "image_background_enable": True, "image_background": "b"},
        image,
        background,
    )
    assert np.array_equal(frame.image, np.rot90(np.maximum(image - background, 0)))
    spot = np.zeros((21, 21), np.float64)
    spot[10, 10] = 8.0
    frame = prepare({"rotation": {"angle": 45, "mode": "7"}}, spot)
    assert frame.image[10, 10] == 8.0 and frame.image.dtype == np.float64
    assert frame.image[0, 0] == 7.0 and frame.image[0, 10] == 0.0  # corner: from outside
    # a point 6 px right of the centre goes up-right at 30 degrees: (10 - 3, 10 + 5.196)
    spot[10, 10], spot[10, 16] = 0.0, 8.0
    turned = prepare({"rotation": {"angle": 30, "order": 1}}, spot).image
    row, col = np.unravel_index(np.argmax(turned), turned.shape)
    assert (row, col) == (7, 15) and turned[10, 16] == 0.0


def test_threshold():
    image = np.array([[1, 2, 3], [4, 5, 6]], np.uint16)
    assert np.array_equal(prepare({"image_threshold": 2.5}, image).image, [[0, 0, 3], [4, 5, 6]])
    assert np.array_equal(prepare({"image_threshold": 3}, image).image, [[0, 0, 3], [4, 5, 6]])
    floats = image.astype(np.float32)
    assert np.array_equal(prepare({"image_threshold": 2.5}, floats).image, [[0, 0, 3], [4, 5, 6]])
    assert np.array_equal(prepare({"image_threshold": 0}, image).image, image)
    assert np.array_equal(prepare({"image_threshold": -4}, image).image, image)


def test_image_averaging_is_a_running_mean_of_the_last_n():
    frames = [np.full((2, 3), v, np.uint16) for v in (1, 2, 6, 10)]
    preprocessor = Preprocessor(parse({"image_averaging": 3}))
    means = [prepare({}, f, preprocessor=preprocessor).image for f in frames]
    assert [m[0, 0] for m in means] == [1.0, 1.5, 3.0, 6.0]  # 1, (1+2)/2, 9/3, 18/3
    assert means[-1].dtype == np.float64
    assert prepare({}, np.ones((1, 1), np.uint16), preprocessor=preprocessor).image[0, 0] == 1
    # background, ROI and threshold come before: 5 - 1 < 5 -> 0, 9 - 1 = 8: mean 4
    preprocessor = Preprocessor(
        parse(
            {
                "image_averaging": 2,
                "image_threshold": 5,
                "image_background_enable": True,
                "image_background": "b",
                "image_region_of_interest": [1, 1, 0, 1],
            }
        )
    )
    for value in (5, 9):
        frame = prepare({}, np.full((2, 3), value, np.uint16), np.ones((2, 3)), preprocessor)
    assert frame.image.tolist() == [[4.0]] and frame.x_axis.tolist() == [1.0]
    preprocessor = Preprocessor(parse({"image_averaging": 2}))  # NaN leaves the window
    values = [
        prepare({}, np.full((1, 2), v), preprocessor=preprocessor).image[0, 0]
        for v in (1.0, np.nan, 3.0, 5.0)
    ]
    assert values[0] == 1.0 and np.isnan(values[1]) and np.isnan(values[2]) and values[3] == 4.0


def test_averaging_before_everything():
    frames = [np.full((2, 2), v, np.uint16) for v in (1, 2, 6, 10, 20, 30)]
    block = Preprocessor(parse({"averaging": 3, "image_threshold": 4}))
    out = [prepare({}, f, preprocessor=block) for f in frames]
    assert [o is None for o in out] == [True, True, False, True, True, False]
    assert out[2].image[0, 0] == 0 and out[5].image[0, 0] == 20  # mean 3 < threshold 4
    moving = Preprocessor(parse({"averaging": -2}))
    assert [prepare({}, f, preprocessor=moving).image[0, 0] for f in frames[:3]] == [1, 1.5, 4]


def test_scale_and_offset_come_last():
    image = np.array([[4, 6]], np.uint16)
    frame = prepare({"image_threshold": 5, "image_scale": 10, "image_offset": 1}, image)
    assert frame.image.dtype == np.float64 and np.array_equal(frame.image, [[1.0, 61.0]])
    assert frame.x_profile.dtype == np.float64 and np.array_equal(frame.x_profile, [1, 61])
    frame = prepare(
        {
            "image_background_enable": True,
            "image_background": "b",
            "image_threshold": 5,
            "image_offset": 0.5,
        },
        image,
        np.full((1, 2), 2.0),
    )
    assert np.array_equal(frame.image, [[0.5, 0.5]])  # 4-2, 6-2 are below 5
    frame = prepare({"image_averaging": 2, "image_scale": 2.0}, image)
    assert np.array_equal(frame.image, [[8.0, 12.0]])


def test_null_never_overrides_a_default():
    settings = parse(
        {
            "binning_x": None,
            "mirror_x": None,
            "rotation": None,
            "image_good_region": {"threshold": None, "gfscale": 2.5},
            "image_slices": {"number_of_slices": None, "orientation": None},
        }
    )
    assert settings.binning == (1, 1) and not settings.mirror_x and settings.rotation is None
    assert (settings.good_region.threshold, settings.good_region.gfscale) == (0.3, 2.5)
    assert (settings.slices.number, settings.slices.scale, settings.slices.orientation) == (
        1,
        2.0,
        "vertical",
    )
    assert parse({"image_slices": {"number_of_slices": 4}}).slices.number == 5  # made odd


PIPE = {"camera_name": "sim"}


@pytest.mark.parametrize(
    "update, message",
    [
        ({"image_slices": {"number_of_slices": 2.5}}, "image_slices.number_of_slices must be"),
        ({"image_slices": {"number_of_slices": "3"}}, "image_slices.number_of_slices must be"),
        (
            {"image_slices": {"orientation": "diagonal"}},
            "image_slices.orientation must be vertical or horizontal, got 'diagonal'",
        ),
        ({"image_slices": [1]}, "image_slices must be an object"),
        ({"image_good_region": {"gfscale": "big"}}, "image_good_region.gfscale must be a number"),
        ({"rotation": "left"}, "rotation must be a number of degrees or an object"),
        ({"rotation": {"angle": 45, "mode": "ortho"}}, "rotation.angle must be a multiple of 90"),
        ({"rotation": {"angle": 5, "mode": "reflect"}}, "rotation.mode must be 'ortho' or a fill"),
        ({"rotation": {"angle": 5, "order": 3}}, "rotation.order must be 0 (nearest) or 1"),
        ({"image_region_of_interest": [0, 10, 0]}, "image_region_of_interest must be [offset_x"),
        ({"image_region_of_interest": [0, 0, 0, 5]}, "image_region_of_interest must be"),
        ({"image_threshold": "10"}, "image_threshold must be a number"),
        ({"image_scale": True}, "image_scale must be a number"),
        ({"image_averaging": 2.5}, "image_averaging must be an integer"),
        ({"averaging": "3"}, "averaging must be an integer"),
        ({"binning_x": 0}, "binning_x must be a positive integer"),
        ({"binning_mean": "yes"}, "binning_mean must be true or false"),
        ({"mirror_y": 1}, "mirror_y must be true or false"),
        ({"image_background_enable": "on"}, "image_background_enable must be true, false, "),
        ({"image_background": "../etc/x"}, "image_background must be a stored background id"),
        ({"fw_threshold": 2}, "fw_threshold must be a number from 0 to 1"),
    ],
)
def test_processing_keys_are_validated_when_the_config_is_set(update, message):
    with pytest.raises(BadRequest) as error:
        validation.pipeline({**PIPE, **update}, ["sim"])
    assert str(error.value).startswith("pipeline config: ") and message in str(error.value)


def test_valid_processing_configs_pass():
    config = {
        **PIPE,
        "binning_x": 2,
        "binning_mean": False,
        "image_background_enable": "signed",
        "image_background": "sim_20240101_000000_000000",
        "mirror_x": True,
        "rotation": {"angle": 12.5, "order": 0, "mode": "1.5"},
        "image_region_of_interest": [-3, 100, 0, 50],
        "image_threshold": 2.5,
        "image_averaging": 3,
        "averaging": -4,
        "image_scale": 0.5,
        "image_offset": -1,
        "fw_threshold": 0.2,
        "image_good_region": {"threshold": 0.5, "gfscale": 2},
        "image_slices": {"number_of_slices": 4, "scale": 1.5, "orientation": "horizontal"},
    }
    assert validation.pipeline(config, ["sim"]) is config
    assert validation.pipeline(
        {
            **PIPE,
            "rotation": {"angle": -270, "mode": "ortho"},
            "image_good_region": {},
            "image_slices": {},
        },
        ["sim"],
    )
