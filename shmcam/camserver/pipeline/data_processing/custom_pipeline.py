"""`cam_server.pipeline.data_processing.custom_pipeline`: CamServer's example of a custom
pipeline's function, `process(parameters, init)` -> `(data, timestamp, pulse_id,
data_size)`: a scalar, a random waveform and image, and whether the call was the first."""

from __future__ import annotations

import time

import numpy as np

_random = np.random.default_rng()


def process(parameters, init=False):
    image = _random.integers(1, 101, (10, 20), dtype=np.uint16)
    data = {
        "scalar": 10.0,
        "waveform": _random.integers(1, 101, 10, dtype=np.uint16),
        "image": image,
        "str": str(init),
    }
    return data, time.time(), None, image.size
