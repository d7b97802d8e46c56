"""What a coordinator reads from a node (shmcam's own routes): everything in one poll, and the
content hashes of its store; and the node's REST-managed permanent instances, served as
CamServer's managers serve theirs (`/api/v1/proxy/permanent`)."""

from __future__ import annotations

from flask import Blueprint

from .common import CHANGE, CONFIG, READ, config_body, ok, route


def blueprint(node) -> Blueprint:
    status = Blueprint("status", __name__)

    @route(status, "/api/v1/node", "GET", READ)
    def snapshot():
        return ok(**node.snapshot())

    @route(status, "/api/v1/node/files", "GET", READ)
    def file_hashes():
        return ok(files=node.file_hashes())

    @route(status, "/api/v1/proxy/permanent", "GET", READ)
    def permanent():
        return ok(permanent_instances=node.permanent_instances())

    @route(status, "/api/v1/proxy/permanent", "POST", CHANGE, CONFIG)
    def permanent_set():
        table = node.set_permanent_instances(config_body())
        return ok("permanent instances set", permanent_instances=table)

    return status
