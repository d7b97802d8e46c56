"""A user-supplied source: a camera script uploaded to the node (PUT /api/v1/cam/script/...).

The script defines a class (`Source` unless the config's `source_class` names another):

    class Source:
        def __init__(self, config): ...       # the camera config (a dict)
        def read(self, timeout): ...          # a 2-D numpy array, (image, pulse_id) or
                                              # (image, pulse_id, (sec, ns)); None if no frame
                                              # came within timeout seconds
        def close(self): ...                  # optional
        online, reason                        # optional attributes, as of any source

A missing pulse id is counted, a missing timestamp is the time of arrival. With `frame_rate`
in the config, read() is called at that rate. The image must not be modified after it is
returned. An exception makes the camera offline; the source is created again with backoff.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import numpy as np

from .base import Pacer, PulseCounter, Source, arrival_time


def load_class(path: Path, name: str):
    # Uploaded scripts need not end in .py: name the loader explicitly.
    loader = importlib.machinery.SourceFileLoader(f"shmcam_camera_{path.stem}", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise ValueError(f"camera script {path.name} defines no class {name}")
    return cls


class ScriptSource(Source):
    """Config: `source` (the camera script's name), `source_class`, `frame_rate`."""

    def __init__(self, config: dict, scripts_dir: Path):
        name = str(config["source"])
        path = next(
            (
                p
                for p in (scripts_dir / name, scripts_dir / f"{name}.py")
                if p.is_file() and p.parent == scripts_dir
            ),
            None,
        )
        if path is None:
            raise FileNotFoundError(f"no camera script {name!r} in {scripts_dir}")
        self._user = load_class(path, config.get("source_class") or "Source")(config)
        rate = config.get("frame_rate")
        self._pacer = Pacer(float(rate)) if rate else None
        self._pulse_ids = PulseCounter()

    def read(self, timeout: float):
        if self._pacer is not None and not self._pacer.wait(timeout):
            return None
        item = self._user.read(timeout)
        if item is None:
            return None
        if isinstance(item, np.ndarray):
            item = (item,)
        image, pulse_id, timestamp = (*item, None, None)[:3]
        if not isinstance(image, np.ndarray) or image.ndim != 2:
            raise TypeError(
                f"the script's read() returned {type(image).__name__}, not a 2-D numpy array"
            )
        return (
            image,
            self._pulse_ids.next() if pulse_id is None else int(pulse_id),
            arrival_time() if timestamp is None else tuple(timestamp),
        )

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
