"""PNG colormaps without matplotlib: every map against matplotlib's own 8-bit colours (taken
from matplotlib 3.11 once and written here), the binning of values into levels, and the
encoded file."""

from __future__ import annotations

import numpy as np
import pytest
from test_camserver_functions import png_rgb

from shmcam import png

# matplotlib: numpy.uint8(colormaps[name](level)[:3] * 255) at these levels, as CamServer renders
LEVELS = (0, 37, 128, 200, 255)
REFERENCE = {
    "viridis": [(68, 1, 84), (69, 50, 127), (32, 144, 140), (112, 206, 86), (253, 231, 36)],
    "plasma": [(12, 7, 134), (84, 1, 163), (203, 71, 119), (250, 160, 57), (239, 248, 33)],
    "inferno": [(0, 0, 3), (41, 11, 84), (187, 55, 84), (251, 157, 6), (252, 254, 164)],
    "magma": [(0, 0, 3), (35, 17, 82), (182, 54, 121), (253, 151, 104), (251, 252, 191)],
    "cividis": [(0, 34, 77), (34, 59, 110), (124, 123, 120), (196, 180, 104), (253, 231, 55)],
    "rainbow": [(127, 0, 255), (53, 112, 248), (128, 254, 179), (255, 159, 84), (255, 0, 0)],
    "jet": [(0, 0, 127), (0, 20, 255), (124, 255, 121), (255, 118, 0), (127, 0, 0)],
    "hot": [(10, 0, 0), (107, 0, 0), (255, 91, 0), (255, 255, 38), (255, 255, 255)],
    "cool": [(0, 255, 255), (36, 218, 255), (128, 127, 255), (200, 55, 255), (255, 0, 255)],
    "gray": [(0, 0, 0), (36, 36, 36), (128, 128, 128), (200, 200, 200), (255, 255, 255)],
    "grey": [(0, 0, 0), (36, 36, 36), (128, 128, 128), (200, 200, 200), (255, 255, 255)],
    "spring": [(255, 0, 255), (255, 36, 218), (255, 128, 127), (255, 200, 55), (255, 255, 0)],
    "summer": [(0, 127, 102), (36, 146, 102), (128, 191, 102), (200, 227, 102), (255, 255, 102)],
    "autumn": [(255, 0, 0), (255, 36, 0), (255, 128, 0), (255, 200, 0), (255, 255, 0)],
    "winter": [(0, 0, 255), (0, 36, 236), (0, 128, 191), (0, 200, 155), (0, 255, 127)],
    "bone": [(0, 0, 0), (32, 32, 45), (112, 123, 143), (179, 206, 206), (255, 255, 255)],
    "copper": [(0, 0, 0), (45, 28, 18), (158, 99, 63), (247, 156, 99), (255, 199, 126)],
    "viridis_r": [(253, 231, 36), (157, 217, 58), (32, 143, 140), (62, 72, 136), (68, 1, 84)],
    "gray_r": [(255, 255, 255), (218, 218, 218), (127, 127, 127), (55, 55, 55), (0, 0, 0)],
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_colormaps_have_matplotlibs_colours(name):
    levels = np.array([LEVELS], np.uint8)
    pixels = png_rgb(png.encode(levels, name))
    if name in ("gray", "grey"):  # stored as grey levels
        pixels = np.repeat(pixels, 3, axis=2)
    assert pixels[0].tolist() == [list(colour) for colour in REFERENCE[name]]


def test_every_map_has_a_reversed_twin_and_rainbow_is_the_default():
    names = png.colormaps()
    assert png.DEFAULT_COLORMAP == "rainbow" and "rainbow" in names
    assert all(f"{name}_r" in names for name in names if not name.endswith("_r"))
    assert len(names) == 34
    with pytest.raises(ValueError, match="unknown colormap 'bogus'; use one of autumn"):
        png.encode(np.zeros((1, 1), np.uint8), "bogus")


def test_values_fall_into_matplotlibs_levels():
    values = np.array([-1.0, 0.0, 0.003, 0.004, 0.5, 0.999, 1.0, 2.0, np.nan])
    assert png.to_levels(values).tolist() == [0, 0, 0, 1, 128, 255, 255, 255, 0]
