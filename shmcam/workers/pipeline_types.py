"""The pipeline types a config can ask for, read one way by the supervisor (validation,
placement, idle stops) and by the instance. Kept free of heavy imports for the supervisor."""

from __future__ import annotations

PIPELINE_TYPES = ("processing", "stream", "store", "custom")


def pipeline_type(config: dict) -> str:
    return config.get("pipeline_type") or "processing"
