"""Where a pipeline's results go: its bsread stream (PUB or PUSH), with the output keys of
CamServer (`include`, `exclude`, compression, header policy, queue size, blocking).

The stream is bound on the pipeline's port, or connected to the address the supervisor
resolved from `output_pipeline` / `output_stream` (`spec["output"]`): a worker pipeline
pushing its results to a fanin."""

from __future__ import annotations

import logging

from shmcam.bsread import Encoder, Sender
from shmcam.shm import StatsBlock

from .pipeline_types import output_mode

log = logging.getLogger(__name__)


def select(result: dict, config: dict) -> dict:
    include, exclude = config.get("include"), config.get("exclude")
    if include:
        result = {k: v for k, v in result.items() if k in include}
    if exclude:
        result = {k: v for k, v in result.items() if k not in exclude}
    return result


class Output:
    """`track`: keep ZMQ's tracker of the last message (`tracker`), for results sent
    without a copy from memory that is reused once ZMQ is done with it."""

    def __init__(self, spec: dict, config: dict, stats: StatsBlock, track: bool = False):
        self.stats = stats
        mode = output_mode(config)
        self.push = mode == "PUSH"
        connect = (spec.get("output") or {}).get("connect")
        self.sender = Sender(
            connect or spec["port"],
            bind=connect is None,
            track=track,
            mode=mode,
            queue_size=int(config.get("queue_size") or 10),
            block=bool(config.get("block", False)),
            send_timeout=1.0,
            encoder=Encoder(
                config.get("data_compression"),
                config.get("data_header_compression"),
                create_header=config.get("create_header") or "on_change",
            ),
        )
        self._errors_logged = 0

    def send(self, result: dict, pulse_id: int, timestamp) -> bool:
        """Send a result; False if it was not sent. A PUSH stream without a client sends
        nothing and drops nothing: no client asked for the frame (a PUB stream has ZMQ
        discard it the same way)."""
        if self.push and not self.sender.clients:
            return False
        try:
            return self.sender.send(result, pulse_id, timestamp)
        except (TypeError, ValueError) as error:  # a result bsread cannot carry, or
            self.stats.add("errors")  # a format change under create_header once
            if self._errors_logged < 10:
                self._errors_logged += 1
                log.error("pulse %d not sent: %s", pulse_id, error)
            return False

    @property
    def tracker(self):
        """ZMQ's tracker of the last message sent (with `track`)."""
        return self.sender.tracker

    @property
    def clients(self) -> int:
        return self.sender.clients

    @property
    def dropped(self) -> int:
        return self.sender.dropped

    @property
    def header_changes(self) -> int:
        return self.sender.encoder.header_changes

    def close(self) -> None:
        self.sender.close()
