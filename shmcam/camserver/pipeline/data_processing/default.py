"""`cam_server.pipeline.data_processing.default`: CamServer's wrapper of the whole chain.

`process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters,
image_background_array=None, bsdata=None)` pre-processes a camera frame by the parameters
(with the background given as an array) and returns the standard fields: shmcam's standard
function.
"""

from __future__ import annotations

from shmcam.processing.standard import StandardProcessing

_standard = StandardProcessing()
_with_background: tuple = (None, None, None)  # (parameters, background, both): built once


def process_image(
    image, pulse_id, timestamp, x_axis, y_axis, parameters, image_background_array=None,
    bsdata=None,
):  # fmt: skip
    global _with_background
    if image_background_array is not None:
        given, background, merged = _with_background
        if given is not parameters or background is not image_background_array:
            merged = {**parameters, "background_data": image_background_array}
            _with_background = (parameters, image_background_array, merged)
        parameters = merged
    return _standard(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata)
