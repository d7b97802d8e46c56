"""`cam_server.pipeline.data_processing.transparent`: the pre-processed image and axes as
they are, with width, height, timestamp and processing_parameters."""

from __future__ import annotations

from .parameters import parameters_json


def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    return {
        "x_axis": x_axis,
        "y_axis": y_axis,
        "width": image.shape[1],
        "height": image.shape[0],
        "image": image,
        "processing_parameters": parameters_json(parameters),
        "timestamp": timestamp[0] + timestamp[1] / 1e9,
    }
