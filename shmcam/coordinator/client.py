"""The coordinator's calls to one node's REST API, with the node token, bounded timeouts and
kept-alive connections; a node's error comes back as the same error (its status and message),
an unreachable node as Unavailable."""

from __future__ import annotations

import threading

import requests

from shmcam.supervisor.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    TooLarge,
    Unavailable,
)

CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 70.0  # a node may wait for an instance to start (60 s) before it answers
ERRORS = {400: BadRequest, 404: NotFound, 409: Conflict, 413: TooLarge, 503: Unavailable}


class NodeError(RuntimeError):
    """A node failed (5xx) or refused the coordinator itself (its token): HTTP 502."""


class NodeClient:
    def __init__(self, name: str, url: str, token: str | None):
        self.name = name
        self.url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._local = threading.local()  # one session (keep-alive) per calling thread

    @property
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def request(
        self, method: str, path: str, timeout: float = READ_TIMEOUT, **kwargs
    ) -> requests.Response:
        """The node's answer; Unavailable if it cannot be reached in time."""
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            return self._session.request(
                method,
                self.url + path,
                headers=headers,
                timeout=(CONNECT_TIMEOUT, timeout),
                **kwargs,
            )
        except requests.RequestException as error:
            raise Unavailable(f"node {self.name} ({self.url}) did not answer: {error}") from None

    def call(self, method: str, path: str, timeout: float = READ_TIMEOUT, **kwargs) -> dict:
        """The node's JSON answer; its error as the same error, with its message."""
        response = self.request(method, path, timeout, **kwargs)
        try:
            answer = response.json()
        except ValueError:
            answer = {"status": response.text[:300]}
        if response.status_code < 400:
            return answer
        message = f"node {self.name}: {answer.get('status', response.reason)}"
        if response.status_code in (401, 403):
            if "token" in message and "runs no code" not in message:
                raise NodeError(f"{message} (the coordinator's node_token_file is wrong)")
            raise Forbidden(message)
        raise ERRORS.get(response.status_code, NodeError)(message)

    def get(self, path: str, **kwargs) -> dict:
        return self.call("GET", path, **kwargs)
