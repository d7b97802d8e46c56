"""`cam_server.pipeline.data_processing.psen`: x profiles of two regions of the image, the
signal and the background of a spectral encoder, named after the camera.

Parameters `roi_signal` and `roi_background`, each `[offset_x, size_x, offset_y, size_y]`
(a region not given is not computed). Channels `<camera_name>.processing_parameters` (JSON of
the two regions), `<camera_name>.roi_signal_x_profile`, `<camera_name>.roi_background_x_profile`.
"""

from __future__ import annotations

import json

_last: tuple = (None, None, "")  # (roi_signal, roi_background, JSON)


def get_roi_x_profile(image, roi):
    offset_x, size_x, offset_y, size_y = roi
    return image[offset_y : offset_y + size_y, offset_x : offset_x + size_x].sum(0)


def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    global _last
    name = parameters["camera_name"]
    signal, background = parameters.get("roi_signal"), parameters.get("roi_background")
    if _last[:2] != (signal, background):
        _last = (
            signal,
            background,
            json.dumps({"roi_signal": signal, "roi_background": background}),
        )
    result = {f"{name}.processing_parameters": _last[2]}
    if signal:
        result[f"{name}.roi_signal_x_profile"] = get_roi_x_profile(image, signal)
    if background:
        result[f"{name}.roi_background_x_profile"] = get_roi_x_profile(image, background)
    return result
