"""Backgrounds: collected from a camera, uploaded, listed and read back (both roots)."""

from __future__ import annotations

import numpy as np
from flask import Blueprint, request

from .. import arrays
from ..errors import BadRequest
from . import images
from .common import CHANGE, READ, UPLOAD, config_body, ok, query_int, route


def add(cam: Blueprint, pipe: Blueprint, node) -> None:
    @route(cam, "/background/<name>/image_bytes", "PUT", CHANGE, UPLOAD)
    def camera_background_put(name):
        node.save_background(name, arrays.load_array(request.get_data()))
        return ok(f"background {name} saved")

    @route(pipe, "/camera/<camera>/background", "POST", CHANGE)
    def background_collect(camera):
        n_images = query_int("n_images", 10)
        background_id = node.collect_background(camera, n_images)
        return ok(f"background of {n_images} images saved", background_id=background_id)

    @route(pipe, "/camera/<camera>/background", "GET", READ)
    def background_latest(camera):
        return ok(background_id=node.latest_background(camera))

    @route(pipe, "/camera/<camera>/backgrounds", "GET", READ)
    def background_list(camera):
        return ok(background_ids=node.background_ids(camera))

    @route(pipe, "/background/<background_id>/image", "GET", READ)
    def background_png(background_id):
        return images.png_response(node.background(background_id))

    @route(pipe, "/background/<background_id>/image_bytes", "GET", READ)
    def background_bytes(background_id):
        return ok(image=arrays.image_bytes_payload(node.background(background_id)))

    @route(pipe, "/background/<background_id>/image_bytes", "PUT", CHANGE, UPLOAD)
    def background_bytes_put(background_id):
        node.save_background(background_id, arrays.load_array(request.get_data()))
        return ok(f"background {background_id} saved")

    @route(pipe, "/background", "POST", CHANGE, UPLOAD)
    def background_upload():
        data = config_body()
        name, values = data.get("filename"), data.get("data")
        if not isinstance(name, str) or not isinstance(values, list):
            raise BadRequest('the body must be {"filename": name, "data": nested list}')
        try:
            array = np.array(values)
        except (TypeError, ValueError) as error:
            raise BadRequest(f"data is not a numeric nested list: {error}") from None
        node.save_background(name, arrays.check_array(array).astype(np.float64))
        return ok(f"background {name} saved", background_id=name)
