"""Errors the supervisor's layers raise; the REST app maps each to an HTTP status."""


class NotFound(LookupError):
    """No config, instance, background, script or lib of that name (HTTP 404)."""


class BadRequest(ValueError):
    """The request or the config is invalid; nothing was changed (HTTP 400)."""


class Conflict(RuntimeError):
    """The request contradicts the current state, e.g. an id already running (HTTP 409)."""


class AlreadyRunning(Conflict):
    """An instance of that id is running already (HTTP 409)."""


class Unauthorized(Exception):
    """A call that changes the node without the node's bearer token (HTTP 401). Not
    PermissionError: an OS permission error of the store is a fault of the node."""


class Forbidden(Exception):
    """A call this node does not allow at all, e.g. code without a token (HTTP 403)."""


class TooLarge(ValueError):
    """A request body above the route's limit (HTTP 413)."""


class Unavailable(RuntimeError):
    """The node or an instance cannot do it now; nothing was changed, try again (HTTP 503)."""


class StorageError(RuntimeError):
    """The node's own files are broken (a config that does not parse, a link out of the data
    directory): a fault of the node, not of the request (HTTP 500, with what to fix)."""
