"""Camera transforms and axes against hand-computed expectations on small arrays."""

from __future__ import annotations

import re

import numpy as np
import pytest

from shmcam.sources import config as camera_config
from shmcam.sources.transforms import (
    CameraTransform,
    axis_arrays,
    binning,
    camera_axes,
    linear_axes,
    transform,
)
from shmcam.supervisor import validation
from shmcam.supervisor.errors import BadRequest

# [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]: width 4, height 3
IMAGE = np.arange(12, dtype=np.uint16).reshape(3, 4)


def test_binning_sums_or_averages_whole_blocks_into_uint16():
    assert binning(IMAGE, 2, 2).tolist() == [[10, 18]]  # the last row is cropped
    assert binning(IMAGE, 2, 2, mean=True).tolist() == [[2, 4]]
    assert binning(IMAGE, 2, 2).dtype == np.uint16
    assert binning(np.full((2, 2), 40000, np.uint16), 2, 2).tolist() == [[65535]]
    assert binning(np.full((2, 2), -3, np.int32), 2, 1).tolist() == [[0], [0]]
    assert binning(np.full((2, 2), 0.25, np.float32), 2, 2).tolist() == [[1.0]]


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"mirror_x": True}, [[3, 2, 1, 0], [7, 6, 5, 4], [11, 10, 9, 8]]),
        ({"mirror_y": True}, [[8, 9, 10, 11], [4, 5, 6, 7], [0, 1, 2, 3]]),
        ({"rotate": 1}, [[3, 7, 11], [2, 6, 10], [1, 5, 9], [0, 4, 8]]),  # counter-clockwise
        ({"rotate": 2}, [[11, 10, 9, 8], [7, 6, 5, 4], [3, 2, 1, 0]]),
        ({"rotate": -1}, [[8, 4, 0], [9, 5, 1], [10, 6, 2], [11, 7, 3]]),
        ({"roi": [1, 2, 1, 1]}, [[5, 6]]),
        ({"roi": [3, 2, 1, 5]}, [[2, 3], [6, 7], [10, 11]]),  # sizes, then offsets clipped
    ],
)
def test_mirror_rotate_and_roi_are_views_of_the_source_frame(config, expected):
    out = transform(IMAGE, config)
    assert out.tolist() == expected
    assert np.shares_memory(out, IMAGE)


def test_transforms_apply_in_the_documented_order():
    config = {"binning_x": 2, "mirror_y": True, "rotate": 1, "roi": [0, 2, 1, 1]}
    # binning_x: [[1, 5], [9, 13], [17, 21]]; mirror_y: [[17, 21], [9, 13], [1, 5]];
    # rotate: [[21, 13, 5], [17, 9, 1]]; roi x 0..1, y 1: [[17, 9]]
    assert transform(IMAGE, config).tolist() == [[17, 9]]
    assert transform(IMAGE, {}) is IMAGE


def test_background_is_subtracted_last_without_negatives_and_checked_for_shape():
    background = np.array([[2, 4], [1, 10]], np.float64)
    image = np.array([[9, 3], [8, 10]], np.uint16)
    subtract = CameraTransform({"rotate": 2}, background)
    # rotate: [[10, 8], [3, 9]], minus the background where brighter
    out = subtract(image)
    assert out.tolist() == [[8, 4], [2, 0]] and out.dtype == np.uint16
    with pytest.raises(ValueError, match=r"background shape \(2, 2\) does not match .*\(3, 4\)"):
        subtract(IMAGE)


def test_axes_are_pixel_numbers_of_the_binned_rotated_image_offset_by_the_roi():
    assert camera_axes({}, 4, 3) == (0.0, 1.0, 0.0, 1.0)
    # binned 2x3, rotated 3x2, roi from x=1
    assert camera_axes({"binning_x": 2, "rotate": 1, "roi": [1, 1, 0, 2]}, 4, 3) == (
        1.0,
        1.0,
        0.0,
        1.0,
    )
    assert camera_axes({"mirror_x": True, "mirror_y": True}, 4, 3) == (0.0, 1.0, 0.0, 1.0)


def test_calibrated_axes_descend_from_the_marker_centre():
    calibration = {
        "reference_marker": [10, 20, 110, 70],
        "reference_marker_width": 200.0,
        "reference_marker_height": 100.0,
        "angle_horizontal": 60.0,
        "angle_vertical": None,
    }
    # origin (60, 45); pixel sizes 200/100*cos(60°) = 1.0 and 100/50 = 2.0
    x0, dx, y0, dy = camera_axes({"camera_calibration": calibration}, 200, 100)
    assert (x0, y0, dy) == pytest.approx((60.0, 90.0, -2.0)) and dx == pytest.approx(-1.0)
    x_axis, y_axis = axis_arrays(200, 100, (x0, dx, y0, dy))
    assert x_axis.dtype == np.float32 and x_axis[60] == 0.0 and x_axis[0] == pytest.approx(60)
    assert y_axis[45] == 0.0 and y_axis[:2].tolist() == pytest.approx([90.0, 88.0])
    # a roi shows the calibrated values of its own pixels: x_axis[i] = -(i + 10 - 60) * 1.0
    config = {"camera_calibration": calibration, "roi": [10, 50, 0, 100]}
    assert camera_axes(config, 200, 100)[0] == pytest.approx(50.0)
    defaults = camera_axes({"camera_calibration": {"reference_marker_width": 50.0}}, 8, 8)
    assert defaults == pytest.approx((25.0, -0.5, 50.0, -1.0))  # marker [0, 0, 100, 100]


def test_linear_axes_from_arrays_and_a_sources_axes_only_without_geometry_changes():
    x_axis, y_axis = axis_arrays(5, 3, (2.5, -0.5, 10.0, 4.0))
    assert linear_axes(x_axis, y_axis) == pytest.approx((2.5, -0.5, 10.0, 4.0))
    assert linear_axes(np.array([0, 1, 3], np.float32), y_axis) is None
    own = (7.0, 2.0, 1.0, 1.0)
    assert CameraTransform({}).axes(4, 3, own) == own
    assert CameraTransform({"rotate": 1}).axes(4, 3, own) == (0.0, 1.0, 0.0, 1.0)


SIM = {"source_type": "simulation"}


@pytest.mark.parametrize(
    "config, key",
    [
        ({**SIM, "roi": [0, 0, 0, 4]}, "roi"),
        ({**SIM, "roi": [0, 2, 0]}, "roi"),
        ({**SIM, "binning_x": 0}, "binning_x"),
        ({**SIM, "rotate": "90"}, "rotate"),
        ({**SIM, "mirror_y": "yes"}, "mirror_y"),
        ({**SIM, "image_background": 3}, "image_background"),
        (
            {**SIM, "camera_calibration": {"reference_marker": [0, 0, 0, 10]}},
            "camera_calibration.reference_marker",
        ),
        (
            {**SIM, "camera_calibration": {"reference_marker_width": -1}},
            "camera_calibration.reference_marker_width",
        ),
        ({"source_type": "hdf5", "source": "frames.h5"}, "source"),
        ({"source_type": "bschannel", "source": "host:9000"}, "source"),
        ({"source_type": "bsread", "source": "tcp://host:9000"}, "source"),
        ({"source_type": "epics"}, "source"),
        ({}, "source"),  # epics by default, as in CamServer
        ({"source_type": "bschannel", "source": "tcp://h:1", "mode": "PUSH"}, "mode"),
        ({"source_type": "area_detector", "source": "AD", "pulse_id_pv": "Id"}, "pulse_id_pv"),
        ({"source_type": "gige"}, "source_type"),
        ({**SIM, "image_type": "noise"}, "image_type"),
        ({**SIM, "dtype": "float16"}, "dtype"),
        ({**SIM, "queue_size": 0}, "queue_size"),
        ({**SIM, "protocol": "udp"}, "protocol"),
        ({**SIM, "alias": ["a", 3]}, "alias"),
        ({**SIM, "image_compression": "zstd"}, "image_compression"),
        ({**SIM, "forwarder_port": 70000}, "forwarder_port"),
        ({"source_type": "bsread", "source": "CAM", "buffer_threshold": 2}, "buffer_threshold"),
        ({"source_type": "stddaq", "source": "DEV", "url": "tcp://redis:6379"}, "url"),
    ],
)
def test_bad_camera_keys_are_refused_by_name(config, key):
    with pytest.raises(BadRequest, match=rf"camera config: {key} must be"):
        validation.camera(config)


@pytest.mark.parametrize(
    "config, message",
    [
        ({**SIM, "url": "tcp://h:1"}, "url applies to source_type bsread and bsread_simulation"),
        ({**SIM, "mode": "SUB"}, "mode applies to source_type bschannel and stddaq and array10"),
        (
            {"source_type": "bschannel", "source": "tcp://h:1", "source_mode": "PULL"},
            "source_mode is not a camera key of shmcam: use CamServer's mode",
        ),
        (
            {"source_type": "bschannel", "source": "tcp://h:1", "image_channel": "x"},
            "image_channel is not a camera key of shmcam: use CamServer's channel",
        ),
        (
            {"source_type": "bschannel", "source": "tcp://h:1", "source_timeout": 3},
            "source_timeout is not a camera key of shmcam: use CamServer's timeout",
        ),
        ({"source_type": "hdf5", "source": "f.h5:/d", "interval": 0.1}, "set frame_rate"),
        ({"source_type": "script", "class": "/opt/cams/mycam.py"}, "not a path"),
        ({"source_type": "script", "class": "cam_server.camera.source.x"}, "built-in"),
    ],
)
def test_keys_of_other_source_types_and_replaced_keys_are_refused_saying_why(config, message):
    with pytest.raises(BadRequest, match=re.escape(message)):
        validation.camera(config)


def test_camserver_camera_configs_pass_with_their_defaults():
    """CamServer's shapes of §2: each source type's config as a CamServer user writes it."""
    configs = [
        {"name": "SARES20-CAMS142-M5", "source": "SARES20-CAMS142-M5"},  # epics by default
        {"source_type": "simulation", "source": "simulation", "image_type": "static_raw"},
        {"source_type": "area_detector", "source": "13SIM1"},
        {
            "source_type": "bsread",
            "source": "SATES21-CAMS154-M1",
            "connections": 2,
            "buffer_size": 20,
            "buffer_threshold": 0.7,
            "threaded": True,
            "enforce_pid": False,
        },
        {"source_type": "bsread_simulation", "source": "SIM"},
        {
            "source_type": "bschannel",
            "source": "tcp://daq:9000",
            "mode": "PULL",
            "channel": "CAM:FPICTURE",
            "timeout": 1000,
        },
        {"source_type": "stddaq", "source": "JF07T32V01", "url": "localhost:6379", "db": "0"},
        {"source_type": "stream", "source": "tcp://std-daq:8000"},
        {"source_type": "array10", "source": "tcp://det:9999", "mode": "PULL"},
        {"source_type": "hdf5", "source": "/data/run.h5:/entry/data"},
        {"source_type": "script", "source": "x", "class": "mycam"},
        {
            "source": "CAM",
            "image_background": True,
            "protocol": "ipc",
            "queue_size": 10,
            "image_compression": True,
            "data_header_compression": "lz4",
            "scalar_compression": None,
            "group": ["Photonics", "Aramis"],
            "alias": "cam",
            "abort_on_error": False,
            "debug": True,
            "simulate_pulse_id": True,
            "check_data": True,
            "binning_mean": True,
            "forwarder_port": 9123,
            "forwarder_compression": True,
            "forwarder_data_header_compression": "bitshuffle_lz4",
            "camera_calibration": {},
        },
    ]
    for config in configs:
        assert validation.camera(config) is config
    defaults = camera_config.parse(configs[0])
    assert defaults["source_type"] == "epics" and defaults["queue_size"] == 100
    assert defaults["abort_on_error"] is True and defaults["protocol"] == "tcp"
    assert camera_config.parse(configs[3])["check_timestamp"] is True
    assert camera_config.parse(configs[-1])["camera_calibration"]["reference_marker"] == [
        0,
        0,
        100,
        100,
    ]  # an empty calibration gets CamServer's defaults


def test_a_background_of_the_image_before_the_roi_is_cut_by_it():
    image = np.arange(48, dtype=np.uint16).reshape(6, 8)
    config = {"roi": [2, 4, 1, 3]}
    full = np.full((6, 8), 5, np.uint16)
    full[1:4, 2:6] = np.arange(12).reshape(3, 4)  # what the roi keeps
    cut = transform(image, config, full)  # CamServer's: the size before the roi
    assert np.array_equal(cut, np.clip(image[1:4, 2:6] - np.arange(12).reshape(3, 4), 0, None))
    assert np.array_equal(transform(image, config, full[1:4, 2:6]), cut)  # shmcam's: after
