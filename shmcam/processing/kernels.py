"""numba kernels for the per-pixel work: one pass over the image, no temporaries.

Compiled once per dtype and cached on disk (cache=True; NUMBA_CACHE_DIR where the package
directory is not writable). Pipelines warm them up before they report ready.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def profiles(image):
    """(x_profile, y_profile) as int64: column sums and row sums, in one pass."""
    height, width = image.shape
    x_profile = np.zeros(width, np.int64)
    y_profile = np.zeros(height, np.int64)
    for j in range(height):
        row = image[j]
        total = 0
        for i in range(width):
            value = np.int64(row[i])
            x_profile[i] += value
            total += value
        y_profile[j] = total
    return x_profile, y_profile
