"""Routes both roots share (`/api/v1/cam`, `/api/v1/pipeline`): server info, heartbeat,
version, and stopping instances."""

from __future__ import annotations

from flask import Blueprint

import shmcam

from .common import CHANGE, READ, ok, route


def add(bp: Blueprint, kind: str, node) -> None:
    @route(bp, "/info", "GET", READ)
    def server_info():
        return ok(info=node.server_info(kind))

    @route(bp, "/version", "GET", READ)
    def version():
        return ok(version=shmcam.__version__)

    @route(bp, "/heartbeat", "GET", READ)
    def heartbeat():
        return ok(version=shmcam.__version__, instances=node.heartbeat(kind))

    @route(bp, "", "DELETE", CHANGE)
    def stop_all():
        node.stop_all(kind)
        return ok(f"all {kind} instances stopped")

    @route(bp, "/<instance_id>", "DELETE", CHANGE)
    def stop(instance_id):
        node.stop(kind, instance_id)
        return ok(f"{kind} instance {instance_id} stopped")

    @route(bp, "/<instance_id>/del", "DELETE", CHANGE)
    def forget(instance_id):
        node.stop(kind, instance_id, forget=True)
        return ok(f"{kind} instance {instance_id} stopped and removed")
