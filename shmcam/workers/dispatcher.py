"""The client side of SwissFEL's dispatcher: bsread streams of named channels, on request.

CamServer reads `bsread_channels` (and `bsread_channels2`) through it when no address is
given. Its REST protocol, as bsread's Python client speaks it:
- `POST <dispatcher_url>/stream` with JSON `{"channels": [{"name", "modulo"?, "offset"?}],
  "streamType": "pub_sub" | "push_pull", "verify": bool, "channelValidation":
  {"inconsistency": "adjust-individual" | "keep-as-is"}, "compression": "none"?}` answers
  `{"stream": "tcp://host:port"}`, the address to connect to (soon: the dispatcher drops a
  stream nobody connects to);
- `DELETE <dispatcher_url>/stream` with the address as its `text/plain` body releases it.
`verify` false asks the dispatcher not to check the channels, with "keep-as-is" frequencies;
`dispatcher_disable_compression` asks for an uncompressed stream. The dispatcher cannot run
outside SwissFEL: the tests run this client against a stand-in server (tests/dispatcher.py).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

from .pipeline_keys import BsreadSource

log = logging.getLogger(__name__)

TIMEOUT = 10.0  # s for a stream request
RELEASE_TIMEOUT = 2.0  # s for a release, at the instance's stop (the supervisor waits 5 s)
MAX_ANSWER = 1 << 16


class DispatcherError(RuntimeError):
    """The dispatcher refused, or could not be asked."""


def request_body(source: BsreadSource) -> dict:
    channels = [
        {"name": channel} if isinstance(channel, str) else dict(channel)
        for channel in source.channels
    ]
    body = {
        "channels": channels,
        "streamType": "push_pull" if source.mode == "PULL" else "pub_sub",
        "verify": source.verify,
        "channelValidation": {
            "inconsistency": "adjust-individual" if source.verify else "keep-as-is"
        },
    }
    if source.disable_compression:
        body["compression"] = "none"
    return body


def _call(method: str, url: str, data: bytes, content_type: str, timeout: float) -> bytes:
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.read(MAX_ANSWER)
    except urllib.error.HTTPError as error:
        text = error.read(2000).decode("utf-8", "replace")
        raise DispatcherError(f"dispatcher {url}: HTTP {error.code}: {text}") from None
    except (urllib.error.URLError, OSError) as error:
        raise DispatcherError(f"dispatcher {url}: {error}") from None


def request_stream(source: BsreadSource) -> str:
    """The address of a new stream of the source's channels."""
    url = f"{source.dispatcher_url}/stream"
    body = json.dumps(request_body(source)).encode()
    answer = _call("POST", url, body, "application/json", TIMEOUT)
    try:
        address = json.loads(answer)["stream"]
    except (ValueError, KeyError, TypeError):
        raise DispatcherError(f"dispatcher {url} answered no stream: {answer[:200]!r}") from None
    if not isinstance(address, str) or "://" not in address:
        raise DispatcherError(f"dispatcher {url} answered {address!r}, not a stream address")
    log.info("dispatcher %s streams %d channels on %s", url, len(source.channels), address)
    return address


def remove_stream(source: BsreadSource, address: str) -> None:
    """Release a stream; a failure is only logged (the dispatcher drops it in time)."""
    try:
        url = f"{source.dispatcher_url}/stream"
        _call("DELETE", url, address.encode(), "text/plain", RELEASE_TIMEOUT)
    except DispatcherError as error:
        log.warning("releasing %s: %s", address, error)
