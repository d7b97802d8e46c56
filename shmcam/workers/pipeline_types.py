"""The pipeline types a config can ask for, read one way by the supervisor (validation,
placement, idle stops) and by the instance. Kept free of heavy imports for the supervisor."""

from __future__ import annotations

PIPELINE_TYPES = ("processing", "stream", "store", "custom", "fanout", "fanin", "external")


def pipeline_type(config: dict) -> str:
    return config.get("pipeline_type") or "processing"


def output_mode(config: dict) -> str:
    """PUB, PUSH or FILE, as the pipeline's `mode` or its default."""
    return config.get("mode") or ("PUSH" if pushes(config) else "PUB")


def pushes(config: dict) -> bool:
    """Whether a pipeline's stream is PUSH unless `mode` says otherwise (CamServer's
    defaults): a store pipeline's (the DataBuffer feed), a fanout's (round robin to its
    workers) and a worker's that sends to a fanin (output_pipeline, output_stream)."""
    return bool(
        pipeline_type(config) in ("store", "fanout")
        or config.get("output_pipeline")
        or config.get("output_stream")
    )


def bind_address(address: str) -> str:
    """Where a fanin binds its input_stream: its port, on every interface (workers on other
    nodes connect to it by the node's name)."""
    return f"tcp://*:{address.rpartition(':')[2]}"


def connect_address(address: str) -> str:
    """A fanin's input_stream as a local worker connects to it."""
    scheme, _, rest = address.partition("://")
    host, _, port = rest.rpartition(":")
    return f"{scheme}://127.0.0.1:{port}" if host in ("*", "0.0.0.0", "") else address


def program_output(config: dict) -> str:
    """What an external pipeline's program does with its results: `ring` (writes its output
    ring, which shmcam publishes as the instance's stream), `stream` (sends its own bsread
    stream) or `none`."""
    return config.get("output") or "ring"
