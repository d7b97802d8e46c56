"""Scripts (pipeline user functions, camera sources), libs and programs (external pipelines'
executables): list, read, upload, delete.

Uploading is running code: the upload routes need CODE permission, and a prebuilt binary
(`.so`) a node with a token, since nothing can be checked about it before it runs.
"""

from __future__ import annotations

from flask import Blueprint, request

from .common import CHANGE, CODE, READ, UPLOAD, ok, route


def add(bp: Blueprint, kind: str, collection: str, store_kind: str, node, auth) -> None:
    """GET list; GET/PUT/DELETE one, kept in the store's `store_kind`."""

    @route(bp, f"/{kind}", "GET", READ, name=f"{store_kind}_names")
    def names():
        return ok(**{collection: node.file_names(store_kind)})

    path = f"/{kind}/<name>/{kind}_bytes"

    @route(bp, path, "GET", READ, name=store_kind)
    def get_file(name):
        return ok(**{kind: node.get_file(store_kind, name).decode("utf-8", "replace")})

    @route(bp, path, "PUT", CODE, UPLOAD, name=store_kind)
    def put_file(name):
        if name.endswith(".so") or ".so." in name:
            auth.check_token(f"uploading the prebuilt binary {name}")
        node.save_file(store_kind, name, request.get_data())
        return ok(f"{kind} {name} saved")

    @route(bp, path, "DELETE", CHANGE, name=store_kind)
    def delete_file(name):
        node.delete_file(store_kind, name)
        return ok(f"{kind} {name} deleted")
