"""A user-supplied source: a camera script uploaded to the node (PUT /api/v1/cam/script/...).

The config names the script by `class` (CamServer's key) or `source`. What the script defines
says which interface it follows:

CamServer's (docs/spec/camserver.md §7): a class named like the module (script `mycam.py`,
`class mycam(Camera)`, Camera from `cam_server.camera.source.camera`; see
shmcam/camserver/camera/source/camera.py). shmcam calls verify_camera_online() and connect()
when it starts the source, read() for every frame (reshaping a flat image to
get_raw_geometry()), get_pulse_id() and get_send_channels(), and disconnect() at the end.

shmcam's own: a class `Source` (or the one `source_class` names):

    class Source:
        def __init__(self, config): ...       # the camera config (a dict)
        def read(self, timeout): ...          # a 2-D numpy array, (image, pulse_id) or
                                              # (image, pulse_id, (sec, ns)); None if no frame
                                              # came within timeout seconds
        def close(self): ...                  # optional
        online, reason                        # optional attributes, as of any source

Either way a missing pulse id is counted (from the clock), a missing timestamp is the time of
arrival, and with `frame_rate` in the config read() is called at that rate. The image must not
be modified after it is returned. An exception makes the camera fail (`abort_on_error`) or
offline, the source then created again with backoff.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import numpy as np

from shmcam.camserver.camera.source.camera import CameraConfig

from .base import Context, Pacer, PulseCounter, Source, arrival_time


def script_path(config: dict, scripts_dir: Path) -> Path:
    name = str(config.get("class") or config["source"])
    for path in (scripts_dir / name, scripts_dir / f"{name}.py"):
        if path.is_file() and path.parent == scripts_dir:
            return path
    raise FileNotFoundError(f"no camera script {name!r} in {scripts_dir}")


def load_module(path: Path):
    # Uploaded scripts need not end in .py: name the loader explicitly.
    loader = importlib.machinery.SourceFileLoader(f"shmcam_camera_{path.stem}", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def user_class(config: dict, scripts_dir: Path) -> tuple[type, bool]:
    """The script's camera class, and whether it follows CamServer's interface."""
    path = script_path(config, scripts_dir)
    module = load_module(path)
    wanted = config.get("source_class")
    candidates = [(wanted, False)] if wanted else [(path.stem, True), ("Source", False)]
    for name, camserver in candidates:
        cls = getattr(module, name, None)
        if isinstance(cls, type):
            return cls, camserver
    raise ValueError(
        f"camera script {path.name} defines no class "
        + (wanted if wanted else f"{path.stem} (CamServer's Camera) nor Source (shmcam's)")
    )


def as_frame(item, pulse_ids: PulseCounter):
    """(image, pulse_id, timestamp) from what a script returned (checked by the intake)."""
    if not isinstance(item, (tuple, list)):
        item = (item,)
    image, pulse_id, timestamp = (*item, None, None)[:3]
    if timestamp is None:
        timestamp = arrival_time()
    elif isinstance(timestamp, list):
        timestamp = tuple(timestamp)
    return image, pulse_ids.next() if pulse_id is None else pulse_id, timestamp


class ScriptSource(Source):
    """Config: `class` or `source` (the camera script's name), `source_class`, `frame_rate`.
    `ScriptSource(config, context)` is the CamServerScript or OwnScript the script asks for."""

    def __new__(cls, config: dict, context: Context):
        if cls is ScriptSource:
            user, camserver = user_class(config, context.scripts_dir)
            cls = CamServerScript if camserver else OwnScript
            instance = super().__new__(cls)
            instance.user_class = user
            return instance
        return super().__new__(cls)

    def __init__(self, config: dict, context: Context):
        rate = config.get("frame_rate")
        self._pacer = Pacer(float(rate)) if rate else None
        self._pulse_ids = PulseCounter()

    @classmethod
    def probe(cls, config: dict, context: Context, timeout: float) -> tuple[bool, str]:
        """A CamServer script's verify_camera_online(); shmcam's scripts are not probed."""
        user, camserver = user_class(config, context.scripts_dir)
        if not camserver:
            return super().probe(config, context, timeout)
        try:
            user(CameraConfig(config, context.camera)).verify_camera_online()
        except Exception as error:
            return False, str(error) or type(error).__name__
        return True, "online"

    def _due(self, timeout: float) -> bool:
        return self._pacer is None or self._pacer.wait(timeout)


class OwnScript(ScriptSource):
    def __init__(self, config: dict, context: Context):
        super().__init__(config, context)
        self._user = self.user_class(config)

    def read(self, timeout: float):
        if not self._due(timeout):
            return None
        item = self._user.read(timeout)
        return None if item is None else as_frame(item, self._pulse_ids)

    @property
    def online(self) -> bool:
        return bool(getattr(self._user, "online", True))

    @property
    def reason(self) -> str:
        return str(getattr(self._user, "reason", "") or "camera script")

    def close(self) -> None:
        close = getattr(self._user, "close", None)
        if close is not None:
            close()


class CamServerScript(ScriptSource):
    reason = "online"

    def __init__(self, config: dict, context: Context):
        super().__init__(config, context)
        self._camera = self.user_class(CameraConfig(config, context.camera))
        self._camera.verify_camera_online()
        self._camera.connect()

    def read(self, timeout: float):
        if not self._due(timeout):
            return None
        image = self._camera.read()
        if image is None:
            return None
        if isinstance(image, np.ndarray) and image.ndim == 1:
            width, height = self._camera.get_raw_geometry()
            if width and height and image.size == width * height:
                image = image.reshape(height, width)
        return as_frame((image, self._camera.get_pulse_id()), self._pulse_ids)

    def send_channels(self, channels: dict) -> dict:
        return self._camera.get_send_channels(channels)

    def close(self) -> None:
        self._camera.disconnect()
