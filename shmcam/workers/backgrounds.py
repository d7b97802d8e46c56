"""Which stored backgrounds belong to a camera and which is its latest: one rule for the
supervisor's store (REST listings) and the camera instance (`image_background: true`).

Backgrounds are named `<camera>_YYYYMMDD_HHMMSS_ffffff` (CamServer's names); ids without such
a stamp (uploaded by name) sort first, the others by their stamp across cameras.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

STAMP = r"_\d{8}_\d{6}_\d{6}"  # <camera>_YYYYMMDD_HHMMSS_ffffff
_STAMP_AT_END = re.compile(STAMP + r"\Z")


def order(background_id: str) -> tuple[str, str]:
    """Sort key: by the id's timestamp; ids without one first."""
    match = _STAMP_AT_END.search(background_id)
    return (background_id[match.start() :] if match else "", background_id)


def of_camera(ids: Iterable[str], camera: str | None = None) -> list[str]:
    """The ids, oldest first; with a camera, only its `<camera>_<stamp>` ids (camera 'cam'
    does not get 'cam_b_<stamp>' of camera 'cam_b')."""
    if camera is not None:
        pattern = re.compile(re.escape(camera) + STAMP)
        ids = (i for i in ids if pattern.fullmatch(i))
    return sorted(ids, key=order)
