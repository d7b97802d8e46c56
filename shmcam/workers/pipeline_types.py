"""The pipeline types a config can ask for, read one way by the supervisor (validation,
placement, idle stops) and by the instance. Kept free of heavy imports for the supervisor."""

from __future__ import annotations

PIPELINE_TYPES = ("processing", "stream", "store", "custom", "fanout", "fanin")


def pipeline_type(config: dict) -> str:
    return config.get("pipeline_type") or "processing"


def output_mode(config: dict) -> str:
    """PUB or PUSH: CamServer's default is PUSH for a fanout (round robin to its workers)
    and for a pipeline that pushes to a fanin (output_pipeline, output_stream)."""
    if config.get("mode"):
        return config["mode"]
    pushes = (
        pipeline_type(config) == "fanout"
        or config.get("output_pipeline")
        or config.get("output_stream")
    )
    return "PUSH" if pushes else "PUB"


def bind_address(address: str) -> str:
    """Where a fanin binds its input_stream: its port, on every interface (workers on other
    nodes connect to it by the node's name)."""
    return f"tcp://*:{address.rpartition(':')[2]}"


def connect_address(address: str) -> str:
    """A fanin's input_stream as a local worker connects to it."""
    scheme, _, rest = address.partition("://")
    host, _, port = rest.rpartition(":")
    return f"{scheme}://127.0.0.1:{port}" if host in ("*", "0.0.0.0", "") else address
