"""`cam_server.pipeline.data_processing.propagate_stream`: a stream pipeline's data as it
came."""

from __future__ import annotations


def process(stream_data, pulse_id, timestamp, parameters):
    return stream_data
