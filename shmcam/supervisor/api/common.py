"""What every route shares: the envelope, strict request bodies, and each route's permission
and body limit, declared with the route (`route`), never inferred from its HTTP method.

Permissions: READ (open to all, as CamServer's reads, including the reads that start an
instance from a saved config), CHANGE (the node's token when it has one), CODE (uploads and
configs that make the node run code: the token; on a node without one, only where
`allow_anonymous_code` says so). One view per method: HEAD reaches only GET's view, and OPTIONS
never reaches a view at all.
"""

from __future__ import annotations

import hmac
import json
import math

from flask import Blueprint, Response, jsonify, request

from ..errors import BadRequest, Forbidden, Unauthorized

READ, CHANGE, CODE = "read", "change", "code"
# Body limits by name, resolved against the node's settings (api/__init__.py).
NO_BODY, CONFIG, UPLOAD = "none", "config", "upload"
MAX_DEPTH = 64  # of nested JSON: configs need a handful of levels


def route(
    bp: Blueprint,
    rule: str,
    method: str,
    permission: str,
    limit: str = NO_BODY,
    name: str | None = None,
):
    """Register the decorated view for one method, with its permission and body limit (and
    an endpoint `name` where one view function is registered more than once)."""

    def register(view):
        view.permission = permission
        view.body_limit = limit
        endpoint = f"{method.lower()}_{name or view.__name__}"
        bp.add_url_rule(rule, endpoint, view, methods=[method])
        return view

    return register


def ok(status: str = "ok", **keys) -> Response:
    return jsonify({"state": "ok", "status": status, **keys})


def body():
    """The request's JSON: strict (no NaN or Infinity, which strict clients cannot read
    back), of bounded depth, else BadRequest."""
    text = request.get_data(cache=True)
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadRequest("the request body is nested too deeply") from None
    except ValueError as error:
        raise BadRequest(f"the request body is not JSON: {error}") from None
    if _depth(data) > MAX_DEPTH:
        raise BadRequest(f"the request body is nested deeper than {MAX_DEPTH} levels")
    return data


def config_body() -> dict:
    """The request's JSON object (a config, an update, ...), else BadRequest."""
    data = body()
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows; use finite numbers")


def _depth(value, level: int = 1) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max([_depth(v, level + 1) for v in value.values()], default=level)
    if isinstance(value, list):
        return max([_depth(v, level + 1) for v in value], default=level)
    return level


def query_float(key: str) -> float | None:
    value = request.args.get(key)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise BadRequest(f"{key} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise BadRequest(f"{key} must be a finite number, got {value!r}")
    return number


def query_int(key: str, default: int) -> int:
    value = request.args.get(key)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{key} must be a number. (An integer, got {value!r}.)") from None


class Auth:
    """Who may do what on this node: its token, and whether code may come without one."""

    def __init__(self, token: str | None, allow_anonymous_code: bool = False):
        self.token = token
        self.allow_anonymous_code = allow_anonymous_code

    def check(self, permission: str, what: str = "this call") -> None:
        if permission == READ:
            return
        if self.token is None:
            if permission == CODE and not self.allow_anonymous_code:
                raise Forbidden(
                    f"{what} makes the node run code, and this node has no token: it runs "
                    f"no code sent anonymously. Set token_file in its shmcam.toml (see the "
                    f"README), or allow_anonymous_code = true on a closed network"
                )
            return
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            raise Unauthorized(
                f"{what} changes the node: it needs the header "
                f"'Authorization: Bearer <token>' of the node's token_file"
            )

    def check_token(self, what: str) -> None:
        """Only with a token, whatever allow_anonymous_code says (prebuilt binaries)."""
        if self.token is None:
            raise Forbidden(f"{what} needs a node with a token (token_file): none is set")
        self.check(CHANGE, what)
