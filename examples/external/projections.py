#!/usr/bin/env python3
"""Per-frame projections and centroid of the input images, as an external shmcam pipeline.

Reads frames (or records with an `image` channel, or a bsread stream) with shmcam.external,
and writes for each: x_profile, y_profile (sums over columns and rows of the pixels above
the config's `threshold`, the threshold subtracted), intensity, x_centroid, y_centroid (in
pixels; NaN for an empty image) and the threshold used. The same program as projections.c
and projections_raw.py (see docs/external.md).
"""

import numpy as np

from shmcam.external import Program


def projections(image: np.ndarray, threshold: float) -> dict:
    weights = np.where(image > threshold, image - threshold, 0).astype(np.float64)
    x_profile, y_profile = weights.sum(axis=0), weights.sum(axis=1)
    intensity = float(x_profile.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        x_centroid = float(x_profile @ np.arange(x_profile.size)) / intensity
        y_centroid = float(y_profile @ np.arange(y_profile.size)) / intensity
    return {
        "x_profile": x_profile,
        "y_profile": y_profile,
        "intensity": intensity,
        "x_centroid": x_centroid,
        "y_centroid": y_centroid,
        "threshold": float(threshold),
    }


def main() -> None:
    with Program() as program:
        for item in program.inputs():
            image = item.image
            if image is None or image.ndim != 2:
                program.error()
                continue
            program.write(item, projections(image, program.config.get("threshold", 0.0)))


if __name__ == "__main__":
    main()
