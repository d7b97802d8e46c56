"""CamServer's fan-out and fan-in pipelines (`pipeline_type` fanout / fanin), for work that
needs more than one node. On one node, `processing_threads` does the same work cheaper
(docs/parallel.md).

- fanout: passes its camera's frames (as the camera's stream channels) or its input
  stream's messages on, unchanged, on a PUSH socket: ZMQ deals them round robin to the
  worker pipelines that read it (`input_pipeline: <fanout>`, `input_mode: PULL`).
- fanin: binds a PULL socket on its `input_stream`, which the workers push their results to
  (`output_pipeline: <fanin>`), puts them back in pulse-id order (`pid_buffer`) and publishes
  them.
"""

from __future__ import annotations

from .camera import stream_channels
from .output import Output, open_output
from .reorder import Reorder


def camera_channels(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    """A camera frame as the camera's own stream carries it."""
    return stream_channels(image, timestamp, x_axis, y_axis)


def channels(data, pulse_id, timestamp, parameters):
    """A message's channels as they came."""
    return dict(data)


class PidOrdered:
    """A fanin's output: messages wait until `pid_buffer` of them are held, then the lowest
    pulse id goes out (CamServer's rule); one that comes after a higher id went out is
    dropped, so the stream is strictly ordered. `send` is True when a message went out."""

    def __init__(self, output: Output, pid_buffer: int):
        self.output = output
        self.reorder = Reorder(max(0, pid_buffer - 1))
        self.late = 0

    def send(self, result: dict, pulse_id: int, timestamp) -> bool:
        if not self.reorder.add(pulse_id, (result, pulse_id, timestamp)):
            self.late += 1
            return False
        sent = False
        for held in self.reorder.ready():
            sent = self.output.send(*held) or sent
        return sent

    def __getattr__(self, name):  # keys, apply, ready, periodic, close: the stream's
        return getattr(self.output, name)

    def counters(self) -> dict:
        counters = self.output.counters()
        counters["dropped"] += self.late
        return counters


def output(spec: dict, config: dict, stats) -> Output | PidOrdered:
    """A pipeline's output: a fanin's puts its messages in pulse-id order first."""
    stream = open_output(spec, config, stats)
    pid_buffer = config.get("pid_buffer") or 0
    if config.get("pipeline_type") == "fanin" and pid_buffer > 1:
        return PidOrdered(stream, pid_buffer)
    return stream
