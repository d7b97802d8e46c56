"""`/api/v1/logs`: the node's recent log records and each instance's, as CamServer serves
them (`[[time, logger, level, message], ...]`) or as text."""

from __future__ import annotations

from flask import Blueprint, Response

from ..logs import text_line
from .common import READ, ok, route


def blueprint(node) -> Blueprint:
    logs = Blueprint("logs", __name__, url_prefix="/api/v1/logs")

    def text(entries: list) -> Response:
        return Response("\n".join(map(text_line, entries)), mimetype="text/plain")

    @route(logs, "", "GET", READ)
    def server_logs():
        return ok(logs=node.logs())

    @route(logs, "/txt", "GET", READ)
    def server_logs_txt():
        return text(node.logs())

    @route(logs, "/instance/<instance_id>", "GET", READ)
    def instance_logs(instance_id):
        return ok(logs=node.instance_logs(instance_id))

    @route(logs, "/instance/<instance_id>/txt", "GET", READ)
    def instance_logs_txt(instance_id):
        return text(node.instance_logs(instance_id))

    return logs
