"""The standard function as a whole (docs/spec/processing.md): the base fields on hand-made images
and on analytic Gaussians (ascending and descending axes), the edge cases, the good region
and the slices of a tilted beam, the JIT warm-up, and the background in a live pipeline."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from numba.core.registry import CPUDispatcher
from supervisor_harness import SIM_CAMERA, receive, wait_for

from shmcam.processing import fit, kernels, profile, resample
from shmcam.processing.standard import StandardProcessing, process_image
from shmcam.sources.simulation import beam_frames
from shmcam.supervisor.validation import expanded_pipeline

BASE_FIELDS = {
    "x_axis",
    "y_axis",
    "image",
    "width",
    "height",
    "processing_parameters",
    "timestamp",
    "min_value",
    "max_value",
    "x_profile",
    "y_profile",
    "intensity",
    "x_fwhm",
    "y_fwhm",
    "x_center_of_mass",
    "y_center_of_mass",
    "x_rms",
    "y_rms",
    *(
        f"{a}_fit_{name}"
        for a in "xy"
        for name in ("gauss_function", "offset", "amplitude", "mean", "standard_deviation")
    ),
}
FWHM_PER_SIGMA = 2 * math.sqrt(2 * math.log(2))


def pixel_axes(image):
    return np.arange(image.shape[1], dtype=np.float32), np.arange(image.shape[0], dtype=np.float32)


def run(image, config=None, x_axis=None, y_axis=None, background=None):
    """One frame through a fresh function (no state shared between tests)."""
    x_default, y_default = pixel_axes(image)
    parameters = dict(config or {})
    if background is not None:
        parameters["background_data"] = background
    return StandardProcessing()(
        image,
        7,
        (1700000000, 250000000),
        x_default if x_axis is None else x_axis,
        y_default if y_axis is None else y_axis,
        parameters,
    )


def gaussian_image(shape, center, sigma, amplitude=1000.0, offset=0.0, rho=0.0):
    """offset + amplitude * a 2-D Gaussian with correlation rho (a tilted beam)."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    dx, dy = (x - center[0]) / sigma[0], (y - center[1]) / sigma[1]
    return offset + amplitude * np.exp(
        -(dx * dx - 2 * rho * dx * dy + dy * dy) / (2 * (1 - rho * rho))
    )


def test_base_fields_of_a_small_hand_made_image():
    image = np.array([[0, 1, 0, 0], [1, 4, 2, 0], [0, 2, 1, 0]], np.uint16)
    image.flags.writeable = False
    result = run(image, {"camera_name": "c", "image_threshold": None})
    assert BASE_FIELDS <= set(result)
    assert (result["width"], result["height"]) == (4, 3)
    assert result["x_profile"].tolist() == [1, 7, 3, 0]
    assert result["y_profile"].tolist() == [1, 7, 3]
    assert result["x_profile"].dtype == np.int64 and result["intensity"] == 11
    assert (result["min_value"], result["max_value"]) == (0, 4)
    assert result["timestamp"] == 1700000000.25
    assert json.loads(result["processing_parameters"]) == {
        "camera_name": "c",
        "image_threshold": None,
    }
    # x profile [1, 7, 3, 0]: min 0, max 7, level 3.5; crossings 0 + 2.5/6 and 1 + 3.5/4
    assert result["x_fwhm"] == pytest.approx(1.875 - 2.5 / 6)
    # y profile [1, 7, 3]: level 4; crossings 0 + 3/6 and 1 + 3/4
    assert result["y_fwhm"] == pytest.approx(1.25)
    assert not result["y_fit_converged"]  # 3 points: fewer than the parameters
    assert result["y_fit_offset"] == 1 and result["y_fit_amplitude"] == 6
    assert result["x_fit_gauss_function"].dtype == np.float64


def test_the_background_array_is_never_serialized():
    config = {"image_background_enable": True, "image_background": "bg_1", "averaging": 2}
    function, image = StandardProcessing(), np.full((2, 3), 9, np.uint16)
    parameters = {**config, "background_data": np.full((2, 3), 4.0)}
    assert function(image, 1, (0, 0), *pixel_axes(image), parameters) is None  # averaging
    result = function(image, 2, (0, 0), *pixel_axes(image), parameters)
    assert json.loads(result["processing_parameters"]) == config
    assert result["image"].tolist() == [[5] * 3] * 2


@pytest.mark.parametrize("calibrated", [False, True], ids=["pixels", "descending"])
def test_analytic_gaussian_beam(calibrated):
    shape, center, sigma = (120, 160), (70.3, 52.6), (9.0, 6.5)
    offset, amplitude = 20.0, 3000.0
    image = gaussian_image(shape, center, sigma, amplitude, offset)
    x_axis, y_axis = pixel_axes(image)
    x_unit = y_unit = 1.0
    if calibrated:  # a calibrated camera: descending axes in mm, origin at pixel 80, 60
        x_unit, y_unit = -0.025, -0.04
        x_axis = ((np.arange(160) - 80) * x_unit).astype(np.float32)
        y_axis = ((np.arange(120) - 60) * y_unit).astype(np.float32)
    result = run(image, x_axis=x_axis, y_axis=y_axis)
    gx = np.exp(-((np.arange(160) - center[0]) ** 2) / (2 * sigma[0] ** 2))
    gy = np.exp(-((np.arange(120) - center[1]) ** 2) / (2 * sigma[1] ** 2))
    for name, c, s, origin, unit, rows, across in (
        ("x", center[0], sigma[0], 80, x_unit, 120, gy),
        ("y", center[1], sigma[1], 60, y_unit, 160, gx),
    ):
        mean = (c - origin) * unit if calibrated else c
        width = s * abs(unit)
        assert result[f"{name}_fit_converged"]
        # the profile of a separable Gaussian: offset * rows + amplitude * sum(across) * g
        assert result[f"{name}_fit_offset"] == pytest.approx(offset * rows, rel=1e-6)
        assert result[f"{name}_fit_amplitude"] == pytest.approx(amplitude * across.sum(), rel=1e-6)
        assert result[f"{name}_fit_mean"] == pytest.approx(mean, abs=1e-5 * width)
        assert result[f"{name}_fit_standard_deviation"] == pytest.approx(width, rel=1e-5)
        assert result[f"{name}_center_of_mass"] == pytest.approx(mean, abs=1e-3 * width)
        assert result[f"{name}_rms"] == pytest.approx(width, rel=1e-3)
        assert result[f"{name}_fwhm"] == pytest.approx(FWHM_PER_SIGMA * width, rel=5e-3)
    assert result["intensity"] == pytest.approx(image.sum())


def test_blank_image():
    result = run(np.zeros((30, 40), np.uint16), {"image_good_region": {}, "image_slices": {}})
    assert result["intensity"] == 0 and (result["min_value"], result["max_value"]) == (0, 0)
    assert result["x_fwhm"] == 0.0 and result["x_center_of_mass"] == 0.0
    assert result["x_fit_amplitude"] == 0 and result["x_fit_standard_deviation"] == 1.0
    assert all(
        result[key] is None
        for key in (
            "good_region",
            "gr_intensity",
            "gr_x_fit_mean",
            "slice_0_center_x",
            "slice_length",
            "coupling",
        )
    )
    assert result["slice_amount"] == 1 and result["slice_orientation"] == "vertical"


def test_saturated_spot_keeps_its_centre():
    # in the middle of the image: the profiles and the centre-of-mass windows are symmetric
    image = np.clip(gaussian_image((100, 140), (69.5, 49.5), (8.0, 6.0), 3e5), 0, 65535)
    result = run(image.astype(np.uint16))
    assert result["max_value"] == 65535
    assert result["intensity"] == image.astype(np.uint16).sum()
    assert result["x_fit_converged"] and result["y_fit_converged"]
    assert result["x_fit_mean"] == pytest.approx(69.5, abs=1e-6)
    assert result["y_fit_mean"] == pytest.approx(49.5, abs=1e-6)
    # the flat top makes the profile wider at half maximum than the spot's 18.8 px
    assert result["x_fwhm"] > 1.2 * FWHM_PER_SIGMA * 8.0


def test_nan_in_a_float_image_is_ignored_by_min_max_and_breaks_no_field():
    image = gaussian_image((40, 50), (25.0, 20.0), (4.0, 4.0)).astype(np.float32)
    image[5, 7] = np.nan
    result = run(image)
    assert result["min_value"] == image[~np.isnan(image)].min()
    assert result["max_value"] == image[~np.isnan(image)].max()
    assert result["x_profile"].dtype == np.float64
    assert np.isnan(result["x_profile"][7]) and np.isnan(result["y_profile"][5])
    assert np.allclose(
        np.delete(result["x_profile"], 7),
        np.delete(image.sum(axis=0, dtype=np.float64), 7),
        rtol=1e-12,
    )
    assert not result["x_fit_converged"] and result["x_fwhm"] == 0.0


def test_spot_at_the_edge():
    image = gaussian_image((60, 80), (0.0, 30.0), (6.0, 5.0), 2000.0)
    result = run(image, {"image_good_region": {}})
    assert result["x_fit_converged"]
    assert result["x_fit_mean"] == pytest.approx(0.0, abs=1e-4)
    assert result["x_fit_standard_deviation"] == pytest.approx(6.0, rel=1e-4)
    # the profile starts at its maximum: the width runs from the edge to the crossing
    assert result["x_fwhm"] == pytest.approx(FWHM_PER_SIGMA * 6.0 / 2, rel=5e-3)
    assert result["good_region"][0] == 0


def test_one_pixel_roi():
    image = np.arange(48, dtype=np.uint16).reshape(6, 8)
    result = run(image, {"image_region_of_interest": [5, 1, 3, 1], "image_good_region": {}})
    assert result["image"].tolist() == [[29]] and (result["width"], result["height"]) == (1, 1)
    assert result["x_axis"].tolist() == [5.0] and result["y_axis"].tolist() == [3.0]
    assert result["x_profile"].tolist() == [29] and result["intensity"] == 29
    assert result["x_fwhm"] == 0.0 and not result["x_fit_converged"]
    # starting values: offset 29, amplitude 0, mean a[0], sigma 1; q = p - 29 = 0
    assert (
        result["x_fit_offset"],
        result["x_fit_amplitude"],
        result["x_fit_mean"],
        result["x_fit_standard_deviation"],
    ) == (29, 0, 5.0, 1.0)
    assert (result["x_center_of_mass"], result["x_rms"]) == (0.0, 0.0)
    assert result["good_region"] is None


def test_fw_threshold_adds_x_fw_and_y_fw():
    image = np.array([[0, 1, 3, 5, 3, 1, 0]] * 2, np.uint16)
    result = run(image, {"fw_threshold": 0.25})
    assert result["x_fw"] == pytest.approx(3.75) and result["x_fwhm"] == pytest.approx(2.5)
    assert "x_fw" not in run(image)


def test_good_region_of_a_hand_made_image():
    profile_x = np.array([0, 0, 1, 4, 9, 10, 8, 3, 1, 0, 0, 0])
    image = np.outer([1, 2, 1], profile_x).astype(np.uint16)
    result = run(image, {"image_good_region": {}})
    # x (level 12 of 40): start 2, end 8, widened by 1.8 -> [-0.4, 10.4] -> 0, 10;
    # y [36, 72, 36]: no index below the maximum is looked at, start 1; end 2 -> 0, 2
    assert result["good_region"] == [0, 0, 10, 2]
    assert result["gr_x_axis"].tolist() == list(range(10))
    assert result["gr_y_axis"].tolist() == [0.0, 1.0]
    assert result["gr_x_profile"].tolist() == (3 * profile_x[:10]).tolist()
    assert result["gr_y_profile"].tolist() == [36, 72]
    assert result["gr_intensity"] == 108
    assert result["gr_x_fit_converged"] and not result["gr_y_fit_converged"]  # 2 points
    assert result["gr_y_fit_offset"] == 36 and result["gr_y_fit_amplitude"] == 36


def tilted(rho, x_axis=None, slices=None):
    image = gaussian_image((240, 320), (150.0, 110.0), (30.0, 20.0), 5000.0, 10.0, rho)
    return run(
        image,
        {"image_good_region": {}, "image_slices": slices or {"number_of_slices": 4}},
        x_axis=x_axis,
    )


def band_mean(position, half, center, sigma):
    """Where the beam's weight lies within a band [position - half, position + half) of a
    Gaussian profile: a band's fit sees the beam there, not at its position."""
    pixels = np.arange(position - half, position + half)
    weights = np.exp(-((pixels - center) ** 2) / (2 * sigma**2))
    return np.sum(pixels * weights) / np.sum(weights)


@pytest.mark.parametrize("rho", [0.5, -0.5])
def test_slices_follow_a_tilted_beam(rho):
    result = tilted(rho)
    assert result["slice_amount"] == 5 and result["slice_orientation"] == "vertical"
    centers = [(result[f"slice_{i}_center_x"], result[f"slice_{i}_center_y"]) for i in range(5)]
    steps = np.diff([y for _, y in centers])
    assert np.all(steps == steps[0]) and steps[0] > 0  # equal bands, stacked along y
    assert result["slice_length"] == steps[0]
    for x, y in centers:  # the mean x of the beam at y: 150 + rho * 30/20 * (y - 110)
        beam_y = band_mean(y, steps[0] / 2, 110.0, 20.0)
        assert x == pytest.approx(150 + rho * 1.5 * (beam_y - 110), abs=0.05)
    assert all(result[f"slice_{i}_fit_converged"] for i in range(5))
    assert sum(result[f"slice_{i}_intensity"] for i in range(5)) < result["gr_intensity"]
    # coupling from vertical bands along x: the mean y of a column: slope rho * 20/30
    assert result["coupling_slope"] == pytest.approx(rho * 2 / 3, rel=0.03)
    assert result["coupling"] == pytest.approx(
        result["coupling_slope"] * result["gr_x_fit_standard_deviation"] ** 2
    )


def test_coupling_changes_sign_with_a_descending_x_axis():
    ascending = tilted(0.5)
    descending = tilted(0.5, x_axis=-np.arange(320, dtype=np.float32))
    # (bands along x may sit one pixel apart: a descending axis indexes from the other side)
    assert descending["coupling_slope"] == pytest.approx(-ascending["coupling_slope"], rel=0.01)
    assert descending["slice_2_center_x"] == pytest.approx(-ascending["slice_2_center_x"])


def test_horizontal_slices_are_bands_along_x():
    result = tilted(0.5, slices={"number_of_slices": 3, "orientation": "horizontal"})
    xs = [result[f"slice_{i}_center_x"] for i in range(3)]
    half = (xs[1] - xs[0]) / 2
    assert half > 0 and xs[2] - xs[1] == 2 * half
    for i, x in enumerate(xs):  # the mean y of the beam at x: 110 + 0.5 * 20/30 * (x - 150)
        beam_x = band_mean(x, half, 150.0, 30.0)
        assert result[f"slice_{i}_center_y"] == pytest.approx(110 + (beam_x - 150) / 3, abs=0.05)
    # with these bands, the coupling line goes through the slices
    assert result["coupling_offset"] + result["coupling_slope"] * xs[1] == pytest.approx(
        result["slice_1_center_y"], abs=0.05
    )


def compiled() -> dict:
    """How many signatures every numba function of the processing has compiled."""
    return {
        f"{module.__name__}.{name}": len(value.signatures)
        for module in (fit, kernels, profile, resample)
        for name, value in vars(module).items()
        if isinstance(value, CPUDispatcher)
    }


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"image_threshold": 900, "image_good_region": {}, "image_slices": {"number_of_slices": 5}},
        {
            "image_background_enable": True,
            "image_background": "b",
            "mirror_x": True,
            "image_region_of_interest": [10, 200, 20, 150],
            "image_good_region": {},
            "image_slices": {"orientation": "horizontal"},
        },
    ],
)
def test_a_simulated_beam_compiles_what_real_frames_use(config):
    """The pipeline warms up on a simulated beam: afterwards, other frames (another beam,
    another place, other intensity) compile nothing more."""
    background = np.full((240, 320), 300.0)
    (warm_up,) = beam_frames(320, 240, count=1)
    process_image(
        warm_up, 0, (0, 0), *pixel_axes(warm_up), {**config, "background_data": background}
    )
    before = compiled()
    frame = gaussian_image((240, 320), (100.0, 140.0), (25.0, 12.0), 9000.0, 50.0, 0.3)
    frame = frame.astype(np.uint16)
    frame.flags.writeable = False
    process_image(frame, 1, (0, 0), *pixel_axes(frame), {**config, "background_data": background})
    assert compiled() == before


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_pipeline_subtracts_a_stored_background_or_streams_errors(supervisor):
    """A background that cannot be loaded: a ScreenPanel instance (named *_sp) notifies
    (CamServer's notify_on_error): zeroed error frames saying why; any other ends with the
    error (abort_on_error)."""
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    sup.call(
        "PUT", "/api/v1/cam/background/sim_bg/image_bytes", data=npy(np.full((240, 320), 1000.0))
    )
    config = {"camera_name": "sim", "image_background_enable": True, "image_background": "sim_bg"}
    good = sup.call("POST", "/api/v1/pipeline", params={"instance_id": "good"}, json=config)
    missing = {**config, "image_background": "sim_nope"}
    screen = sup.call("POST", "/api/v1/pipeline", params={"instance_id": "sim_sp"}, json=missing)
    sup.call("POST", "/api/v1/pipeline", params={"instance_id": "other"}, json=missing)
    frames = [f.astype(np.int64) for f in beam_frames(320, 240, count=16)]
    for message in receive(good["stream"], 3):
        data = message.data
        assert any(np.array_equal(data["image"], np.maximum(f - 1000, 0)) for f in frames)
        parameters = json.loads(data["processing_parameters"])
        assert parameters == expanded_pipeline(config)  # no background_data
        assert data["intensity"] == data["image"].sum()
    for message in receive(screen["stream"], 3):
        data = message.data
        error = json.loads(data["processing_parameters"])["processing_error"]
        assert "image_background 'sim_nope' cannot be loaded" in error
        assert data["image"].shape == (240, 320) and not data["image"].any()
    info = sup.call("GET", "/api/v1/pipeline/instance/sim_sp/info")["info"]
    assert info["statistics"]["errors"] >= 3 and info["is_stream_active"]
    report = wait_for(
        lambda: (
            (r := sup.call("GET", "/api/v1/pipeline/instance/other/exitcode"))["exitcode"] and r
        ),
        what="the other pipeline to end",
    )
    assert "image_background 'sim_nope' cannot be loaded" in report["last_error"]
