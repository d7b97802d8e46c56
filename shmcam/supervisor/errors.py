"""Errors the supervisor's layers raise; the REST app maps each to an HTTP status."""


class NotFound(LookupError):
    """No config, instance, background, script or lib of that name (HTTP 404)."""


class BadRequest(ValueError):
    """The request or the config is invalid; nothing was changed (HTTP 400)."""


class Conflict(RuntimeError):
    """The request contradicts the current state, e.g. an id already running (HTTP 409)."""
