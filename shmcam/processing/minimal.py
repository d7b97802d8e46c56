"""A minimal beam function (profiles, intensity, centre of mass): the cheapest useful one.

CamServer signature: process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters,
bsdata=None) -> dict | None. The image is a read-only view: never written.
"""

from __future__ import annotations

import numpy as np

from .kernels import profiles


def _center_of_mass(profile: np.ndarray, axis: np.ndarray) -> float | None:
    total = profile.sum()
    return float(np.dot(profile, axis) / total) if total else None


def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    if image.dtype.kind in "ui":
        x_profile, y_profile = profiles(image)
    else:  # float images keep float profiles (docs/spec/processing.md)
        x_profile, y_profile = image.sum(axis=0), image.sum(axis=1)
    return {
        "x_axis": x_axis,
        "y_axis": y_axis,
        "image": image,
        "width": image.shape[1],
        "height": image.shape[0],
        "timestamp": timestamp[0] + timestamp[1] / 1e9,
        "x_profile": x_profile,
        "y_profile": y_profile,
        "intensity": int(x_profile.sum()),
        "x_center_of_mass": _center_of_mass(x_profile, x_axis),
        "y_center_of_mass": _center_of_mass(y_profile, y_axis),
    }
