"""`/api/v1/pipeline`: pipeline instances (create, share, inspect, update) and saved configs.

A config that makes the node start a program (`pipeline_type: external`) needs CODE
permission wherever it enters: created, updated or saved (a saved one starts on an open read).
"""

from __future__ import annotations

from flask import Blueprint, request

from .. import validation
from . import images
from .common import CHANGE, CODE, CONFIG, READ, config_body, ok, route


def add(pipe: Blueprint, node, auth) -> None:
    def checked(config: dict) -> dict:
        reason = validation.runs_code(config)
        if reason:
            auth.check(CODE, reason)
        return config

    def instance_answer(instance, status="ok"):
        return ok(status, instance_id=instance.id, stream=instance.stream, config=instance.config)

    @route(pipe, "", "GET", READ)
    def pipeline_names():
        return ok(pipelines=node.pipeline_names())

    @route(pipe, "/config_names", "GET", READ)
    def pipeline_config_names():
        return ok(config_names=node.pipeline_names())

    @route(pipe, "/groups", "GET", READ)
    def pipeline_groups():
        return ok(groups=node.groups("pipeline"))

    @route(pipe, "/camera", "GET", READ)
    def pipeline_cameras():
        return ok(cameras=node.camera_names())

    @route(pipe, "", "POST", CHANGE, CONFIG)
    def pipeline_create():
        config = checked(config_body())
        instance = node.create_pipeline(config, request.args.get("instance_id"))
        return instance_answer(instance, f"instance {instance.id} started")

    @route(pipe, "/<name>", "POST", CHANGE, CONFIG)
    def pipeline_create_from_name(name):
        instance = node.create_pipeline_from_name(
            name, request.args.get("instance_id"), request.args.get("additional_config")
        )
        return instance_answer(instance, f"instance {instance.id} started")

    @route(pipe, "/instance/<instance_id>", "GET", READ)
    def pipeline_shared(instance_id):
        return instance_answer(node.shared_pipeline(instance_id))

    @route(pipe, "/instance/", "POST", CHANGE, CONFIG)
    def pipeline_for_config():
        return instance_answer(node.pipeline_for_config(checked(config_body())))

    @route(pipe, "/instance/<instance_id>/info", "GET", READ)
    def pipeline_info(instance_id):
        return ok(info=node.pipeline_info(instance_id))

    @route(pipe, "/instance/<instance_id>/exitcode", "GET", READ)
    def pipeline_exitcode(instance_id):
        return ok(**node.pipeline_exitcode(instance_id))

    @route(pipe, "/instance/<instance_id>/config", "GET", READ)
    def pipeline_instance_config(instance_id):
        return ok(config=node.instance_config(instance_id))

    @route(pipe, "/instance/<instance_id>/config", "POST", CHANGE, CONFIG)
    def pipeline_instance_update(instance_id):
        config = node.update_pipeline(instance_id, checked(config_body()))
        return ok(f"instance {instance_id} config updated", config=config)

    @route(pipe, "/<name>/config", "GET", READ)
    def pipeline_config(name):
        return ok(config=node.pipeline_config(name))

    @route(pipe, "/<name>/config", "POST", CHANGE, CONFIG)
    def pipeline_config_save(name):
        config = node.save_pipeline_config(name, checked(config_body()))
        return ok(f"pipeline config {name} saved", config=config)

    @route(pipe, "/<name>/config", "DELETE", CHANGE)
    def pipeline_config_delete(name):
        node.delete_pipeline_config(name)
        return ok(f"pipeline config {name} deleted")

    images.add(pipe, "/instance/<name>", node.pipeline_image)
