"""A user function as pipelines call it: after the standard pre-processing, checked.

CamServer hands a user function the pre-processed image and axes (binning, background,
mirror, rotation, ROI, threshold, averaging, scale/offset of docs/spec/processing.md), so a script
written for it sees what it saw there. The chain is the standard function's own, with its
state per config kept the same way (a new parameters dict starts afresh). The image and axes
are handed over read-only (`copy: true` in the config hands over a writable copy of the
image instead, for functions that change it in place, as in CamServer), and a result that is
neither a dict nor None raises TypeError, so that the pipeline counts it as an error instead
of failing later in the sender. Functions that read arrays' memory as C-contiguous without
checking (C written for CamServer) get contiguous arrays: copies where the pre-processing
left a view (a region of interest, a mirror).
"""

from __future__ import annotations

import numpy as np

from .standard import PerConfig


def _contiguous(array: np.ndarray) -> np.ndarray:
    """array as a read-only C-contiguous array (a copy if it is not one)."""
    return read_only(array if array.flags.c_contiguous else np.ascontiguousarray(array))


def read_only(array: np.ndarray) -> np.ndarray:
    """array, or a read-only view of it (its owner may still write it)."""
    if not array.flags.writeable:
        return array
    view = array.view()
    view.flags.writeable = False
    return view


class UserFunction:
    """process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None)
    around a user's function of the same signature."""

    def __init__(self, function, name: str, contiguous: bool = False):
        self.function = function
        self.name = name
        self.view = _contiguous if contiguous else read_only
        self.state = PerConfig()

    def __call__(self, image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
        configured = self.state.get(parameters)
        frame = configured.preprocess(image, x_axis, y_axis, parameters.get("background_data"))
        if frame is None:  # `averaging` is collecting frames
            return None
        extra = () if bsdata is None else (bsdata,)  # 6-argument CamServer scripts work
        view = self.view
        image = np.array(frame.image, order="C") if parameters.get("copy") else view(frame.image)
        result = self.function(
            image,
            pulse_id,
            timestamp,
            view(frame.x_axis),
            view(frame.y_axis),
            parameters,
            *extra,
        )
        if result is not None and not isinstance(result, dict):
            raise TypeError(
                f"function {self.name!r} returned a {type(result).__name__}; "
                f"a user function returns a dict of channels, or None to drop "
                f"the frame"
            )
        return result
