"""PNG previews of frames for the REST API: the 8-bit scaling of a frame; the encoding and
the colormaps are shmcam.png's."""

from __future__ import annotations

import numpy as np

from shmcam.png import colormaps, encode  # noqa: F401 (the REST API's PNG functions)


def scale(image: np.ndarray, min_value=None, max_value=None) -> np.ndarray:
    """8-bit image from the given (or the image's own) range; NaN shows as black."""
    data = np.nan_to_num(image.astype(np.float32), nan=np.float32(min_value or 0))
    low = float(np.min(data)) if min_value is None else float(min_value)
    high = float(np.max(data)) if max_value is None else float(max_value)
    span = high - low if high > low else 1.0
    return np.clip((data - low) * (255.0 / span), 0, 255).astype(np.uint8)
