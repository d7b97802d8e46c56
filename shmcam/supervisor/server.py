"""The waitress server of the REST API, configured so that idle or slow clients cannot starve
it, and so that its own errors (a body above the limit, a malformed request) carry the JSON
envelope every other answer has.

Idle connections cost no thread in waitress, only a slot of `connection_limit` and a file
descriptor: the limit is high (and the descriptor limit raised to match), and connections idle
for CHANNEL_TIMEOUT seconds are closed. Request bodies are bounded before waitress buffers them.
"""

from __future__ import annotations

import json
import resource

import waitress
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

CONNECTION_LIMIT = 1000
CHANNEL_TIMEOUT = 20  # seconds an idle connection is kept
CLEANUP_INTERVAL = 5


class _JsonErrorTask(ErrorTask):
    def execute(self):
        error = self.request.error
        body = json.dumps(
            {"state": "error", "status": f"{error.reason}: {error.body}".strip()}
        ).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    error_task_class = _JsonErrorTask


def raise_file_limit(wanted: int) -> None:
    """Enough descriptors for CONNECTION_LIMIT clients beside the instances' pipes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def create(app, host: str, port: int, threads: int, max_body: int):
    raise_file_limit(4 * CONNECTION_LIMIT)
    server = waitress.create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        connection_limit=CONNECTION_LIMIT,
        channel_timeout=CHANNEL_TIMEOUT,
        cleanup_interval=CLEANUP_INTERVAL,
        max_request_body_size=max_body,
        ident="shmcam",
    )
    server.channel_class = _Channel
    return server
