"""A user function as pipelines call it: after the standard pre-processing, checked.

CamServer hands a user function the pre-processed image and axes (binning, background,
mirror, rotation, ROI, threshold, averaging, scale/offset of docs/spec/processing.md), so a script
written for it sees what it saw there. The chain is the standard function's own, with its
state per config kept the same way (a new parameters dict starts afresh). The image and axes
are handed over read-only, and a result that is neither a dict nor None raises TypeError, so
that the pipeline counts it as an error instead of failing later in the sender.
"""

from __future__ import annotations

import numpy as np

from .standard import Configured


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

    def __init__(self, function, name: str):
        self.function = function
        self.name = name
        self.configured: Configured | None = None

    def __call__(self, image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
        if self.configured is None or self.configured.parameters is not parameters:
            self.configured = Configured(parameters)
        frame = self.configured.preprocess(image, x_axis, y_axis, parameters.get("background_data"))
        if frame is None:  # `averaging` is collecting frames
            return None
        extra = () if bsdata is None else (bsdata,)  # 6-argument CamServer scripts work
        result = self.function(
            read_only(frame.image),
            pulse_id,
            timestamp,
            read_only(frame.x_axis),
            read_only(frame.y_axis),
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
