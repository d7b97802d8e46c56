"""`cam_server.pipeline.data_processing.processor`: CamServer's default function.

`process_image` is shmcam's standard function (shmcam.processing.standard) on an image the
pipeline has pre-processed already, as CamServer's processor is: it adds the measures (the
28 base fields, x_fw/y_fw, good region, slices) and applies none of the pre-processing keys
again, so a user function that calls it on the image it was given gets what the standard
function gives for the frame. With `processing_error` in the parameters (CamServer's
notify_on_error), only the fields of an error frame, with a zeroed image.
"""

from __future__ import annotations

from shmcam.processing.standard import StandardProcessing, error_fields

from .parameters import parameters_json

_measures = StandardProcessing(preprocessed=True)


def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    if parameters.get("processing_error"):
        return error_fields(image, x_axis, y_axis, parameters_json(parameters))
    return _measures(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata)
