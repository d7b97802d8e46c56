"""The camera intake's limits on its own (sources/intake.py)."""

from __future__ import annotations

import numpy as np

from shmcam.sources.intake import Intake


def test_a_frame_above_the_nodes_limit_is_refused_and_counted():
    intake = Intake({}, "cam", max_bytes=1000)
    small = np.zeros((10, 50), np.uint16)  # 1000 bytes: the limit itself passes
    big = np.zeros((10, 51), np.uint16)
    assert intake.accept((small, 1, (1, 0))) is not None
    assert intake.accept((big, 2, (1, 0))) is None
    assert intake.rejected == 1
    assert intake.accept((small, 3, (1, 0))) is not None  # the camera goes on
