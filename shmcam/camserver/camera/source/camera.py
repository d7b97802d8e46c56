"""`cam_server.camera.source.camera`: the base class of camera scripts written for CamServer.

A script `<name>.py` defines `class <name>(Camera)` with `get_raw_geometry()` (width, height),
`connect()`, `disconnect()` and `read()` (the next image, a 2-D array, or a flat one of the raw
geometry's size; None if there is none), and optionally `verify_camera_online()` (raises while
the camera is offline), `get_pulse_id()` (the frame's pulse id, or None to have it counted)
and `get_send_channels(default_channels)` (the channels of the camera stream for a frame:
CamServer's six, to which it may add its own). shmcam calls them as CamServer does
(sources/script.py); the transforms, the stream and the pacing at `frame_rate` are shmcam's.
Written from docs/spec/camserver.md, not from CamServer's code.
"""

from __future__ import annotations

import time


class CameraConfig:
    """What a CamServer camera class gets as `camera_config`: the config and its name."""

    def __init__(self, config: dict, name: str):
        self.parameters = config
        self._name = name

    def get_configuration(self) -> dict:
        return self.parameters

    def get_name(self) -> str:
        return self._name

    def get_source(self):
        return self.parameters.get("source")


class Camera:
    def __init__(self, camera_config: CameraConfig):
        self.camera_config = camera_config
        self.width_raw = self.height_raw = None
        self.dtype = None
        self.simulate_pulse_id = camera_config.get_configuration().get("simulate_pulse_id", False)
        self.last_pid = 0

    def get_name(self) -> str:
        return self.camera_config.get_name()

    def get_parameters(self) -> dict:
        return self.camera_config.parameters

    def get_raw_geometry(self):
        return self.width_raw, self.height_raw

    def get_geometry(self):
        """The raw geometry after binning and rotation (width, height)."""
        width, height = self.get_raw_geometry()
        config = self.get_parameters()
        width //= config.get("binning_x") or 1
        height //= config.get("binning_y") or 1
        return (height, width) if (config.get("rotate") or 0) % 2 else (width, height)

    def get_pulse_id(self):
        """With simulate_pulse_id, the clock in 10 ms units, never repeating; else None."""
        if not self.simulate_pulse_id:
            return None
        self.last_pid = max(self.last_pid + 1, time.time_ns() // 10_000_000)
        return self.last_pid

    def get_send_channels(self, default_channels: dict) -> dict:
        return default_channels

    def verify_camera_online(self) -> None:
        return None

    def connect(self) -> None:
        return None

    def disconnect(self) -> None:
        return None

    def read(self):
        return None
