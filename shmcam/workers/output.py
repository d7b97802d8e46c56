"""Where a pipeline's results go: its bsread stream (PUB or PUSH), with the output keys of
CamServer (`include`, `exclude`, compression, header policy, queue size, blocking), and its
record ring while something on the node reads it there (a cascade, an external program)."""

from __future__ import annotations

import logging
import struct

from shmcam.bsread import Encoder, Sender
from shmcam.shm import RecordWriter, ShmError, StatsBlock

log = logging.getLogger(__name__)


def select(result: dict, config: dict) -> dict:
    include, exclude = config.get("include"), config.get("exclude")
    if include:
        result = {k: v for k, v in result.items() if k in include}
    if exclude:
        result = {k: v for k, v in result.items() if k not in exclude}
    return result


class Output:
    def __init__(self, spec: dict, config: dict, stats: StatsBlock):
        self.stats = stats
        self.push = (config.get("mode") or "PUB") == "PUSH"
        self.sender = Sender(
            spec["port"],
            mode=config.get("mode") or "PUB",
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


class RecordOutput:
    """The pipeline's record ring (`shmcam.<node>.<instance>.out`), written only while the
    supervisor says a local reader needs it (`follow`): a copy of every result costs the
    pipeline a memcpy of its image, which only readers on the node justify. The supervisor
    owns the ring: it creates it before the first reader attaches and removes it with the
    instance; a writer that stops leaves its generation closed for the next one."""

    def __init__(self, base: str | None, stats: StatsBlock):
        self.base = base
        self.stats = stats
        self.writer: RecordWriter | None = None
        self._errors_logged = 0

    def follow(self, wanted: bool) -> None:
        """Start or stop writing, as the supervisor asks."""
        if wanted and self.writer is None and self.base:
            self.writer = RecordWriter(self.base)
        elif not wanted and self.writer is not None:
            self.close()

    def write(self, result: dict, pulse_id: int, timestamp) -> None:
        if self.writer is None:
            return
        try:
            self.writer.write(pulse_id, timestamp, result)
        except (TypeError, ValueError, ShmError, OSError, struct.error) as error:
            self.stats.add("errors")  # a value a record cannot hold, /dev/shm full
            if self._errors_logged < 10:
                self._errors_logged += 1
                log.error("pulse %d not written to the record ring: %s", pulse_id, error)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close(unlink=False)
            self.writer = None
