"""CamServer's helpers (`cam_server.pipeline.data_processing.functions`), each checked against
values worked out by hand or by an independent numpy/scipy computation written here, plus
processor, default and pipeline utils."""

from __future__ import annotations

import math
import struct
import zipfile
import zlib

import numpy as np
import pytest
from scipy.optimize import curve_fit

from shmcam.camserver.pipeline import utils
from shmcam.camserver.pipeline.data_processing import default, functions, processor
from shmcam.processing.standard import StandardProcessing
from shmcam.sources.simulation import beam_frames

RNG = np.random.default_rng(7)


def gaussian(x, offset, amplitude, mean, sigma):
    return offset + amplitude * np.exp(-((x - mean) ** 2) / (2 * sigma**2))


def png_rgb(data: bytes) -> np.ndarray:
    """The pixels of an 8-bit RGB (or grey) PNG without filters, as written by shmcam."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, _, color_type = struct.unpack(">IIBB", data[16:26])
    chunks, position = b"", 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        if data[position + 4 : position + 8] == b"IDAT":
            chunks += data[position + 8 : position + 8 + length]
        position += length + 12
    channels = 3 if color_type == 2 else 1
    rows = np.frombuffer(zlib.decompress(chunks), np.uint8).reshape(height, -1)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, channels)


# --- pixels --------------------------------------------------------------------------------------


def test_subtract_background_clamps_at_zero_in_place_or_on_a_copy():
    image = np.array([[10, 5], [3, 0]], np.uint16)
    background = np.array([[4, 6], [3, 1]], np.uint16)
    result = functions.subtract_background(image, background)
    assert result is image and result.dtype == np.uint16
    np.testing.assert_array_equal(result, [[6, 0], [0, 0]])
    frozen = np.array([[10, 5], [3, 0]], np.uint16)
    frozen.flags.writeable = False
    copy = functions.subtract_background(frozen, background)
    assert copy is not frozen and frozen[0, 0] == 10
    np.testing.assert_array_equal(copy, [[6, 0], [0, 0]])
    assert functions.subtract_background(frozen, None) is frozen
    with pytest.raises(RuntimeError, match=r"Invalid background_image size \(1, 2\)"):
        functions.subtract_background(image, background[:1])


def test_subtract_background_signed_keeps_negatives_as_int32():
    image = np.array([[10, 5]], np.uint16)
    result = functions.subtract_background_signed(image, np.array([[4, 6]], np.uint16))
    assert result.dtype == np.int32 and result.tolist() == [[6, -1]]
    assert functions.subtract_background_signed(image, None).dtype == np.int32
    assert image.tolist() == [[10, 5]]


@pytest.mark.parametrize(
    "value, expected",
    [(1, True), ("2.5", True), ("1e3", True), (True, True), ("x", False), (None, False)],
)
def test_is_number(value, expected):
    assert functions.is_number(value) is expected


def test_rotate_ortho_turns_counter_clockwise_and_angles_rotate_about_the_centre():
    image = np.array([[1, 2, 3], [4, 5, 6]])
    assert functions.rotate(image, 90, mode="ortho").tolist() == [[3, 6], [2, 5], [1, 4]]
    assert functions.rotate(image, 180, mode="ortho").tolist() == [[6, 5, 4], [3, 2, 1]]
    square = RNG.integers(0, 1000, (9, 9)).astype(np.float64)
    # a quarter turn by interpolation lands on the grid: the same as turning the array
    np.testing.assert_allclose(functions.rotate(square, 90), np.rot90(square), atol=1e-9)
    np.testing.assert_allclose(functions.rotate(square, 180, order=0), square[::-1, ::-1])
    # 45 degrees: corners come from outside, filled with the mode's value
    turned = functions.rotate(np.ones((9, 9)), 45, mode="7.5")
    assert turned[0, 0] == 7.5 and turned[4, 4] == pytest.approx(1.0)
    assert functions.rotate(np.ones((9, 9)), 45, mode="nearest")[0, 0] == pytest.approx(1.0)


def test_region_of_interest_threshold_min_max_profiles_and_intensity():
    image = np.arange(20, dtype=np.uint16).reshape(4, 5)
    assert functions.get_region_of_interest(image, 1, 2, 2, 1).tolist() == [[11, 12]]
    frozen = image.copy()
    frozen.flags.writeable = False
    # the threshold itself, not int(threshold) (CamServer's bug, fixed): 10.5 drops 10
    assert functions.apply_threshold(frozen, 10.5).ravel().tolist() == [0] * 11 + list(
        range(11, 20)
    )
    assert frozen[2, 0] == 10  # a read-only image is copied
    floats = np.array([[0.3, 0.7], [np.nan, 2.0]])
    assert functions.get_min_max(floats) == (0.3, 2.0)
    assert functions.apply_threshold(floats, 0.5)[0].tolist() == [0.0, 0.7]
    x_profile, y_profile = functions.get_x_y_profile(image)
    assert x_profile.dtype == y_profile.dtype == np.int64
    assert x_profile.tolist() == [30, 34, 38, 42, 46]
    assert y_profile.tolist() == [10, 35, 60, 85]
    assert functions.get_intensity(x_profile) == 190
    x_float, _ = functions.get_x_y_profile(np.ones((2, 3), np.float32))
    assert x_float.dtype == np.float32 and x_float.tolist() == [2, 2, 2]


def test_find_index_on_ascending_and_descending_axes():
    ascending = np.array([0.0, 1.0, 2.0, 3.0])
    assert [functions.find_index(ascending, v) for v in (-5, 0, 1.5, 2, 3, 9)] == [
        0,
        0,
        1,
        2,
        3,
        3,
    ]
    descending = ascending[::-1].copy()
    assert [functions.find_index(descending, v) for v in (9, 3, 2.5, 2, 0, -5)] == [
        0,
        0,
        1,
        1,
        3,
        3,
    ]


def test_good_region_of_a_profile():
    profile = np.array([0, 0, 1, 5, 10, 5, 1, 0, 0], np.float64)
    # level 3; 2 and 6 are the first points below it; widened by 0.8 * 4 / 2 = 1.6 a side
    assert functions.get_good_region_profile(profile) == (0, 7)
    assert functions.get_good_region_profile(profile, 0.3, 1.0) == (2, 6)
    assert functions.get_good_region_profile(profile, threshold=1.5) == (4, 4)


# --- fits ----------------------------------------------------------------------------------------


def test_gauss_fit_agrees_with_scipy_and_the_spec_centre_of_mass():
    axis = np.linspace(-10, 10, 201)
    profile = gaussian(axis, 5.0, 100.0, 1.3, 2.2) + RNG.normal(0, 0.5, axis.size)
    found, _ = curve_fit(gaussian, axis, profile, p0=[profile.min(), 100, 1.0, 2.0])
    curve, offset, amplitude, mean, sigma, com, rms = functions.gauss_fit(profile, axis)
    np.testing.assert_allclose([offset, amplitude, mean, sigma], found, rtol=1e-5)
    np.testing.assert_allclose(curve, gaussian(axis, *found), rtol=1e-5)
    weights = (profile - offset) / (profile - offset).sum()
    weights[np.abs(axis - mean) > 5 * sigma] = 0
    expected_com = (axis * weights).sum()
    assert com == pytest.approx(expected_com, rel=1e-9)
    assert rms == pytest.approx(math.sqrt(abs(((axis - expected_com) ** 2 * weights).sum())))
    *_, com_legacy, rms_legacy = functions.gauss_fit(profile, axis, remove_outliers=False)
    assert com_legacy == pytest.approx((axis * profile).sum() / profile.sum())
    assert rms_legacy == pytest.approx(
        math.sqrt(abs((axis**2 * profile).sum() / profile.sum() - com_legacy**2))
    )
    with pytest.raises(RuntimeError, match="Invalid axis passed 3 201"):
        functions.gauss_fit(profile, axis[:3])


def test_gauss_fit_psss_bounded_by_maxfev_and_skip():
    axis = np.linspace(0, 50, 101)
    profile = gaussian(axis, 2.0, 40.0, 23.0, 4.0)
    offset, amplitude, center, sigma = functions.gauss_fit_psss(profile, axis)
    assert (offset, amplitude, center, sigma) == pytest.approx((2.0, 40.0, 23.0, 4.0), rel=1e-6)
    start_center = np.dot(axis, profile) / profile.sum()
    area = np.sum((profile[1:] + profile[:-1] - 2 * profile.min()) * np.diff(axis)) / 2
    start_sigma = area / ((profile.max() - profile.min()) * math.sqrt(2 * math.pi))
    expected = (profile.min(), profile.max() - profile.min(), start_center, start_sigma)
    assert functions.gauss_fit_psss(profile, axis, skip=True) == pytest.approx(expected)
    # one evaluation cannot converge: the starting values come back
    assert functions.gauss_fit_psss(profile, axis, maxfev=1) == pytest.approx(expected)
    guessed = functions.gauss_fit_psss(profile, axis, center=20.0, skip=True)
    assert guessed[2] == 20.0


def test_linear_and_quadratic_fits():
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    y = np.array([1.1, 2.9, 5.2, 6.8, 9.1])
    slope, offset = functions.linear_fit(x, y)
    expected_slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    assert slope == pytest.approx(expected_slope)
    assert offset == pytest.approx(y.mean() - expected_slope * x.mean())
    np.testing.assert_allclose(functions.quadratic_fit(x, 2 * x**2 - 3 * x + 1), [2, -3, 1])
    with pytest.raises(ValueError, match="two distinct x"):
        functions.linear_fit(np.array([1.0]), np.array([2.0]))


@pytest.mark.parametrize("interpolate", [True, False])
def test_full_widths(interpolate):
    x = np.arange(9, dtype=np.float64)
    triangle = np.array([0, 1, 2, 3, 4, 3, 2, 1, 0], np.float64)
    assert functions.get_fw(x, triangle, 0.5, interpolate) == 4.0
    assert functions.get_fwhm(x, triangle) == 4.0
    # level 6.5 crosses between the points around the peak: 1.5 .. 2.5
    spike = np.array([3, 3, 10, 3, 3], np.float64)
    assert functions.get_fw(x[:5], spike, 0.5, interpolate) == (1.0 if interpolate else 2.0)
    # the left side never comes down to 5: the width starts at the axis' end (CamServer
    # extrapolated the first segment to -0.5), and ends between 4 and 5, at 4.5
    edge = np.array([6, 8, 10, 8, 6, 4, 2, 0], np.float64)
    assert functions.get_fw(x[:8], edge, 0.5, interpolate) == (4.5 if interpolate else 5.0)
    for degenerate in (np.ones(5), np.array([1.0, np.nan, 2.0]), np.array([3.0])):
        assert functions.get_fw(x[: degenerate.size], degenerate) == 0.0


# --- slices --------------------------------------------------------------------------------------


def test_calculate_slices_by_hand():
    axis = np.arange(21, dtype=np.float64)
    # size 2 * 3 / 3 = 2: half a band is 1 pixel; middle [9, 11], one band each side
    assert functions.calculate_slices(axis, 10.0, 3.0, 2, 3) == ([7, 9, 11, 13], 1, 2.0)
    bounds, half, length = functions.calculate_slices(axis[::-1].copy(), 10.0, 3.0, 2, 5)
    assert (bounds, half, length) == ([5, 7, 9, 11, 13, 15], 1, 2.0)
    assert functions.calculate_slices(axis, 0.0, 3.0, 2, 3) == ([], 1, None)  # off the axis
    with pytest.raises(ValueError, match="Number of slices must be odd."):
        functions.calculate_slices(axis, 10.0, 3.0, 2, 4)


@pytest.mark.parametrize("orientation", ["x", "y"])
def test_slices_data_agree_with_fits_of_each_band(orientation):
    x_axis, y_axis = np.arange(80, dtype=np.float64), np.arange(60, dtype=np.float64)
    yy, xx = np.meshgrid(y_axis, x_axis, indexing="ij")
    # a tilted beam: its x centre moves with y
    image = 1000 * np.exp(-((xx - 40 - 0.3 * (yy - 30)) ** 2) / 50 - (yy - 30) ** 2 / 80)
    if orientation == "y":
        data, length = functions.get_y_slices_data(image, x_axis, y_axis, 30.0, 6.0, 2, 3)
        along, across, fitted_axis = y_axis, x_axis, x_axis
    else:
        data, length = functions.get_x_slices_data(image, x_axis, y_axis, 40.0, 5.0, 2, 3)
        along, across, fitted_axis = x_axis, y_axis, y_axis
    bounds, half, expected_length = functions.calculate_slices(
        along, 30.0 if orientation == "y" else 40.0, 6.0 if orientation == "y" else 5.0, 2, 3
    )
    assert length == expected_length and len(data) == len(bounds) - 1 == 3
    for (center, sigma, intensity), start, stop in zip(data, bounds, bounds[1:]):
        band = image[start:stop] if orientation == "y" else image[:, start:stop]
        profile = band.sum(0) if orientation == "y" else band.sum(1)
        found, _ = curve_fit(gaussian, fitted_axis, profile, p0=[0, profile.max(), 40, 5])
        position = along[start + half]
        expected = [found[2], position] if orientation == "y" else [position, found[2]]
        np.testing.assert_allclose(center, expected, rtol=1e-5)
        assert sigma == pytest.approx(abs(found[3]), rel=1e-5)
        assert intensity == pytest.approx(band.sum())
    assert across.size  # both axes were used


# --- images --------------------------------------------------------------------------------------


def test_binning_sums_clip_and_axes_average():
    image = np.arange(20, dtype=np.uint16).reshape(4, 5)
    binned, x_axis, y_axis = functions.binning(
        image, np.arange(5, dtype=np.float32), np.arange(4, dtype=np.float32), 2, 2
    )
    assert binned.dtype == np.uint16 and binned.tolist() == [[12, 20], [52, 60]]
    assert x_axis.dtype == np.float32 and x_axis.tolist() == [0.5, 2.5]
    assert y_axis.tolist() == [0.5, 2.5]
    mean, _, _ = functions.binning(image, None, None, 2, 2, mean=True)
    assert mean.tolist() == [[3, 5], [13, 15]]
    bright = np.full((2, 2), 60000, np.uint16)
    assert functions.binning(bright, None, None, 2, 2)[0].tolist() == [[65535]]
    none, x_only, _ = functions.binning(None, np.arange(6.0), np.arange(3.0), 3, 1)
    assert none is None and x_only.tolist() == [1.0, 4.0]


def test_copies():
    image = RNG.integers(0, 100, (50, 7)).astype(np.uint16)
    copy = functions.chunk_copy(image, max_chunk=30)  # 2 rows per chunk
    assert copy is not image and np.array_equal(copy, image)
    assert np.array_equal(functions.chunk_copy(image, max_chunk=1), image)
    assert functions.enforce_image_writable(image) is image
    frozen = image.view()
    frozen.flags.writeable = False
    writable = functions.enforce_image_writable(frozen)
    assert writable.flags.writeable and np.array_equal(writable, image)
    assert functions.copy_image(image) is not image


def test_png_from_image_as_camserver_renders_it():
    image = np.array([[0, 50], [100, 100]], np.uint16)
    # normalised 0, 0.5, 1, 1: rainbow entries 0, 128, 255 (matplotlib's colours)
    pixels = png_rgb(functions.get_png_from_image(image))
    assert pixels[0, 0].tolist() == [127, 0, 255]
    assert pixels[0, 1].tolist() == [128, 254, 179]
    assert pixels[1, 0].tolist() == pixels[1, 1].tolist() == [255, 0, 0]
    assert image.tolist() == [[0, 50], [100, 100]]  # not changed
    # min_value subtracted first (50 -> 0, 100 -> 50), then max_value clips: 0, 0, 1, 1
    pixels = png_rgb(functions.get_png_from_image(image, min_value=50, max_value=40))
    assert pixels[0, 1].tolist() == [127, 0, 255] and pixels[1, 0].tolist() == [255, 0, 0]
    grey = png_rgb(functions.get_png_from_image(image, colormap_name="gray"))
    assert grey[..., 0].tolist() == [[0, 128], [255, 255]]
    halved = png_rgb(functions.get_png_from_image(np.arange(16.0).reshape(4, 4), scale=0.5))
    assert halved.shape == (2, 2, 3)  # means 2.5, 4.5, 10.5, 12.5 of 12.5: top is red
    assert halved[1, 1].tolist() == [255, 0, 0]
    with pytest.raises(ValueError, match="Unable to apply colormap 'nope'"):
        functions.get_png_from_image(image, colormap_name="nope")


# --- processor, default, utils -------------------------------------------------------------------


def test_processor_measures_a_pre_processed_image_as_the_standard_function_does():
    frame = beam_frames(64, 48, "uint16", count=1)[0]
    axes = (np.arange(64, dtype=np.float32), np.arange(48, dtype=np.float32))
    config = {
        "image_region_of_interest": [8, 40, 4, 30],
        "image_threshold": 20,
        "image_good_region": {},
        "image_slices": {"number_of_slices": 3},
    }
    standard = StandardProcessing()(frame, 1, (5, 0), *axes, config)
    # pre-processed by hand: the ROI, then the threshold
    image = frame[4:34, 8:48].copy()
    image[image < 20] = 0
    got = processor.process_image(image, 1, (5, 0), axes[0][8:48], axes[1][4:34], config)
    assert got.keys() == standard.keys()
    for key, value in standard.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        else:
            assert got[key] == value, key
    error = processor.process_image(image, 1, (5, 0), *axes, {"processing_error": "bad"})
    assert set(error) == {"x_axis", "y_axis", "image", "width", "height", "processing_parameters"}
    assert not error["image"].any()


def test_default_runs_the_whole_chain_with_a_background_array():
    frame = beam_frames(32, 24, "uint16", count=1)[0]
    axes = (np.arange(32, dtype=np.float32), np.arange(24, dtype=np.float32))
    background = np.full(frame.shape, 15, np.uint16)
    config = {"image_background_enable": True, "image_background": "b"}
    got = default.process_image(frame, 1, (0, 0), *axes, config, background)
    expected = np.where(frame > 15, frame - 15, 0)
    np.testing.assert_array_equal(got["image"], expected)
    assert got["intensity"] == expected.sum()
    assert "background_data" not in got["processing_parameters"]


def test_lib_files_and_eggs(tmp_path, monkeypatch):
    libs = tmp_path / "libs"
    libs.mkdir()
    with zipfile.ZipFile(libs / "tools.egg", "w") as egg:
        egg.writestr("eggtool_xyz/__init__.py", "ANSWER = 42\n")
    monkeypatch.setenv("SHMCAM_LIBS", str(libs))
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    assert utils.get_lib_file("mask.npy") == str(libs / "mask.npy")
    with pytest.raises(ValueError, match="not a lib name"):
        utils.get_lib_file("../secret")
    assert utils.import_egg("tools.egg") == str(libs / "tools.egg")
    import eggtool_xyz

    assert eggtool_xyz.ANSWER == 42
    with pytest.raises(FileNotFoundError, match="no lib 'other.egg'"):
        utils.import_egg("other.egg")
    monkeypatch.delenv("SHMCAM_LIBS")
    with pytest.raises(RuntimeError, match="SHMCAM_LIBS is not set"):
        utils.get_lib_file("x")
