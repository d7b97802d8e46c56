"""The pipeline types a config can ask for, read one way by the supervisor (validation,
placement, idle stops) and by the instance. Kept free of heavy imports for the supervisor."""

from __future__ import annotations

PIPELINE_TYPES = ("processing", "stream", "store", "custom", "external")


def pipeline_type(config: dict) -> str:
    return config.get("pipeline_type") or "processing"


def program_output(config: dict) -> str:
    """What an external pipeline's program does with its results: `ring` (writes its output
    ring, which shmcam publishes as the instance's stream), `stream` (sends its own bsread
    stream) or `none`."""
    return config.get("output") or "ring"
