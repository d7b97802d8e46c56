"""`/api/v1/cam`: camera configs, streams, online state and frames."""

from __future__ import annotations

from flask import Blueprint

from . import images
from .common import CHANGE, CONFIG, READ, body, ok, route


def add(cam: Blueprint, node) -> None:
    @route(cam, "", "GET", READ)
    def camera_names():
        return ok(cameras=node.camera_names())

    @route(cam, "/aliases", "GET", READ)
    def camera_aliases():
        return ok(aliases=node.camera_aliases())

    @route(cam, "/groups", "GET", READ)
    def camera_groups():
        return ok(groups=node.groups("camera"))

    @route(cam, "/<camera>", "GET", READ)
    def camera_stream(camera):
        return ok(stream=node.camera_stream(camera))

    @route(cam, "/<camera>/is_online", "GET", READ)
    def camera_online(camera):
        online, reason = node.camera_online(camera)
        return ok(reason, online=online)

    @route(cam, "/<camera>/config", "GET", READ)
    def camera_config(camera):
        return ok(config=node.camera_config(camera))

    @route(cam, "/<camera>/config", "POST", CHANGE, CONFIG)
    def camera_config_save(camera):
        return ok(f"camera {camera} config saved", config=node.set_camera_config(camera, body()))

    @route(cam, "/<camera>/config", "DELETE", CHANGE)
    def camera_config_delete(camera):
        node.delete_camera_config(camera)
        return ok(f"camera {camera} config deleted")

    images.add(cam, "/<name>", node.camera_image)
