"""`cam_server.pipeline.data_processing.merge`: the standard fields plus the frame's other
channels (`bsdata`: a merged bsread stream's values, a camera stream's extra channels).

The channels an image stream always carries (image, axes, width, height, timestamp) are the
camera's raw ones: the processed fields of the same names are kept.
"""

from __future__ import annotations

from . import processor

CAMERA_CHANNELS = ("image", "width", "height", "timestamp", "x_axis", "y_axis")


def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    result = processor.process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters)
    if bsdata:
        result.update((k, v) for k, v in bsdata.items() if k not in CAMERA_CHANNELS)
    return result
