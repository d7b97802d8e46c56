"""`cam_server.pipeline.data_processing.propagate_stream_with_prefix`: a stream pipeline's
data with every channel renamed `<prefix><name>` (the `prefix` parameter)."""

from __future__ import annotations


def process(stream_data, pulse_id, timestamp, parameters):
    prefix = parameters.get("prefix") or ""
    return {f"{prefix}{name}": value for name, value in stream_data.items()}
