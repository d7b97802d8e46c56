"""Image routes (PNG, image_bytes, geometry) of cameras, pipelines and backgrounds."""

from __future__ import annotations

import numpy as np
from flask import Blueprint, Response, request

from ... import png
from .. import arrays
from ..errors import BadRequest
from .common import READ, ok, query_float, route


def png_response(image: np.ndarray) -> Response:
    """The image as PNG: query `scale` (downscaling by whole pixels, applied first so the
    8-bit scaling touches fewer), `raw`, `min_value`, `max_value`, `colormap`."""
    args = request.args
    factor = query_float("scale")
    if factor is not None:
        if not 0 < factor <= 1e6:
            raise BadRequest(f"scale must be a positive number, got {args['scale']!r}")
        largest = max(image.shape)
        if factor * largest < 1:
            raise BadRequest(
                f"scale {args['scale']} leaves less than a pixel of this "
                f"{image.shape[1]}x{image.shape[0]} image; use at least {1 / largest:.3g}"
            )
        step = max(1, round(1 / factor))
        image = image[::step, ::step]
    try:
        if args.get("raw") is None:
            image8 = png.scale(image, query_float("min_value"), query_float("max_value"))
            colormap = args.get("colormap", png.DEFAULT_COLORMAP)
        else:  # the pixel values themselves, grey unless a colormap is asked for
            image8 = np.clip(image, 0, 255).astype(np.uint8)
            colormap = args.get("colormap", "grey")
        data = png.encode(image8, colormap)
    except ValueError as error:
        raise BadRequest(str(error)) from None
    return Response(data, mimetype="image/png")


def add(bp: Blueprint, path: str, latest) -> None:
    """GET geometry, image (PNG) and image_bytes of the image `latest(name)` returns."""

    @route(bp, f"{path}/geometry", "GET", READ)
    def geometry(name):
        return ok(geometry=list(latest(name).shape[::-1]))

    @route(bp, f"{path}/image", "GET", READ)
    def image(name):
        return png_response(latest(name))

    @route(bp, f"{path}/image_bytes", "GET", READ)
    def image_bytes(name):
        return ok(image=arrays.image_bytes_payload(latest(name)))
