"""The standard beam processing function (docs/spec/processing.md): the pipelines' default.

`process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None)` runs the
pre-processing chain, then returns the 28 base fields, `x_fw`/`y_fw`, the good region with its
slices, and one extra flag per fit, `<prefix>_fit_converged` (False: the fit failed and its
fields hold the starting values). A frame that cannot be processed as configured (a
background of another shape, say) raises a ValueError saying why: the pipeline streams it as
a processing-error frame and counts it.

For a stored background, the caller loads the array and passes it as
`parameters["background_data"]` (the pipeline does, once per config); it is never serialized
into `processing_parameters`.
"""

from __future__ import annotations

import json
import threading

import numpy as np

from . import config
from .preprocess import Preprocessor
from .profile import as_float, full_width, measure
from .regions import fit_fields, good_region


def error_fields(image, x_axis, y_axis, processing_parameters: str) -> dict:
    """The fields of a frame that could not be processed (docs/spec/processing.md): the axes, a
    zeroed image, its size, and the parameters, which say what went wrong."""
    return {
        "x_axis": x_axis,
        "y_axis": y_axis,
        "image": np.zeros_like(image),
        "width": image.shape[1],
        "height": image.shape[0],
        "processing_parameters": processing_parameters,
    }


class Configured:
    """What a config costs to prepare, made once per parameters object: the parsed settings,
    the JSON of `processing_parameters`, the averaging state. With `preprocessed`, the image
    is taken as pre-processed already: only the measures are configured."""

    def __init__(self, parameters: dict, preprocessed: bool = False):
        self.settings = config.parse(parameters)
        self.json = json.dumps(
            {key: value for key, value in parameters.items() if key != "background_data"}
        )
        steps = config.measures_only(self.settings) if preprocessed else self.settings
        self.preprocess = Preprocessor(steps)
        self.parameters = parameters


class PerConfig(threading.local):
    """What a function prepares per config, per thread: the workers of a parallel pipeline
    (threads) call one function at once, each with its own config object."""

    configured: Configured | None = None

    def get(self, parameters: dict, preprocessed: bool = False) -> Configured:
        """The preparation for these parameters: kept while the same dict comes again."""
        configured = self.configured
        if configured is None or configured.parameters is not parameters:
            configured = self.configured = Configured(parameters, preprocessed)
        return configured


class StandardProcessing:
    """process_image with its state (`preprocessed`: the measures of an image
    pre-processed already, as CamServer's processor.process_image takes it). The state
    follows the parameters object: a pipeline passes the same dict until its config changes,
    and a new dict (a new config) starts afresh. A dict changed in place is not seen: pass a
    new one. Each thread has its own state."""

    def __init__(self, preprocessed: bool = False):
        self.preprocessed = preprocessed
        self.state = PerConfig()

    def __call__(self, image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
        configured = self.state.get(parameters, self.preprocessed)
        settings = configured.settings
        frame = configured.preprocess(image, x_axis, y_axis, parameters.get("background_data"))
        if frame is None:
            return None
        result = {
            "x_axis": frame.x_axis,
            "y_axis": frame.y_axis,
            "image": frame.image,
            "width": frame.image.shape[1],
            "height": frame.image.shape[0],
            "processing_parameters": configured.json,
            "timestamp": timestamp[0] + timestamp[1] / 1e9,
            "min_value": frame.min_value,
            "max_value": frame.max_value,
            "x_profile": frame.x_profile,
            "y_profile": frame.y_profile,
            "intensity": frame.x_profile.sum(),
        }
        for name, profile, axis in (
            ("x", frame.x_profile, frame.x_axis),
            ("y", frame.y_profile, frame.y_axis),
        ):
            profile, axis = as_float(profile), as_float(axis)
            *fit, fwhm, center, rms = measure(profile, axis)
            result.update(
                {
                    f"{name}_fwhm": fwhm,
                    f"{name}_center_of_mass": center,
                    f"{name}_rms": rms,
                    **fit_fields(name, *fit),
                }
            )
            if settings.fw_threshold is not None:
                result[f"{name}_fw"] = full_width(profile, axis, settings.fw_threshold)
        if settings.good_region is not None:
            result.update(good_region(frame, settings))
        return result


process_image = StandardProcessing()
