"""External pipelines: the contract between the supervisor and a program in any language.

The contract is a set of environment variables (docs/external.md gives their exact formats).
This module holds both sides of it, so that they cannot drift apart:

- the supervisor's: `environment()` builds the variables, `create_output_ring()` makes the
  record ring a program writes, `write_config()` replaces the config file atomically and
  `ConfigPublisher` sends each update on the config stream;
- the program's: `Program` reads the variables and hands out input items (frames or records
  of a ring, messages of a bsread stream), writes output records, keeps the config current
  and bumps the statistics block. Python programs may use it; programs in other languages use
  include/shmcam/ and the variables (examples/external/).

It imports only numpy and the shm layer up front; ZMQ and bsread when a stream is used.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from shmcam.names import check_name
from shmcam.shm import RecordReader, RecordWriter, RingReader, StatsBlock, layout, segment
from shmcam.shm.records import DEFAULT_CAPACITY, create_record_ring
from shmcam.shm.slotring import DEFAULT_SLOTS, generation_name, generations, ring_base

log = logging.getLogger(__name__)

INSTANCE = "SHMCAM_INSTANCE"
NODE = "SHMCAM_NODE"
INPUT_RING = "SHMCAM_INPUT_RING"
INPUT_STREAM = "SHMCAM_INPUT_STREAM"
INPUT_MODE = "SHMCAM_INPUT_MODE"
OUTPUT_RING = "SHMCAM_OUTPUT_RING"
OUTPUT_STREAM = "SHMCAM_OUTPUT_STREAM"
OUTPUT_MODE = "SHMCAM_OUTPUT_MODE"
CONFIG = "SHMCAM_CONFIG"
CONFIG_STREAM = "SHMCAM_CONFIG_STREAM"
STATS = "SHMCAM_STATS"

INPUT_MODES = ("SUB", "PULL")
OUTPUT_MODES = ("PUB", "PUSH")
_POLL_S = 0.25  # how often a waiting program looks whether it was asked to stop


# ---- The supervisor's side


def output_ring_base(node: str, instance: str) -> str:
    """The base name of an instance's output record ring: 'shmcam.<node>.<instance>.out'."""
    return ring_base(node, instance, "out")


def create_output_ring(
    node: str, instance: str, slots: int = DEFAULT_SLOTS, capacity: int = DEFAULT_CAPACITY
) -> str:
    """Create the (empty) output record ring of an external instance, before starting it, and
    return its base name for SHMCAM_OUTPUT_RING. The program's writer takes over its slots and
    capacity (bytes per record; slots grow when a record needs more). Readers (the publisher
    of the instance's stream, cascades) may attach at once. Remove it with
    `shmcam.shm.remove_ring(base)` once the instance is gone for good: it outlives restarts.
    """
    base = output_ring_base(node, instance)
    create_record_ring(base, slots, capacity)
    return base


def environment(
    node: str,
    instance: str,
    *,
    input_ring: str | None = None,
    input_stream: str | None = None,
    input_mode: str = "SUB",
    output_ring: str | None = None,
    output_stream: str | None = None,
    output_mode: str = "PUB",
    config: str | os.PathLike | None = None,
    config_stream: str | None = None,
    stats: str | None = None,
) -> dict[str, str]:
    """The contract's environment variables for one program (to add to its environment)."""
    check_name(node, "node name")
    check_name(instance, "instance name")
    if input_ring and input_stream:
        raise ValueError("an external program reads one input: a ring or a stream, not both")
    if output_ring and output_stream:
        raise ValueError("an external program writes one output: a ring or a stream, not both")
    if input_mode not in INPUT_MODES or output_mode not in OUTPUT_MODES:
        raise ValueError(
            f"input mode is one of {INPUT_MODES}, output mode one of {OUTPUT_MODES}; "
            f"not {input_mode!r}, {output_mode!r}"
        )
    env = {INSTANCE: instance, NODE: node}
    for name, value in (
        (INPUT_RING, input_ring),
        (INPUT_STREAM, input_stream),
        (OUTPUT_RING, output_ring),
        (OUTPUT_STREAM, output_stream),
        (CONFIG, None if config is None else os.fspath(Path(config).absolute())),
        (CONFIG_STREAM, config_stream),
        (STATS, stats),
    ):
        if value:
            env[name] = value
    if input_stream:
        env[INPUT_MODE] = input_mode
    if output_stream:
        env[OUTPUT_MODE] = output_mode
    return env


def write_config(path: str | os.PathLike, config: Mapping[str, Any]) -> None:
    """Replace the config file at once (a new file renamed over the old): a program never reads
    half of one, and a changed inode tells it there is a new one."""
    path = Path(path)
    text = json.dumps(dict(config), allow_nan=False)  # strict JSON, for any language's parser
    fd, draft = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(draft, path)
    except BaseException:
        Path(draft).unlink(missing_ok=True)
        raise


class ConfigPublisher:
    """The config stream: a PUB socket sending each update as one JSON message."""

    def __init__(self, address: str = "tcp://127.0.0.1:0"):
        import zmq

        self._socket = zmq.Context.instance().socket(zmq.PUB)
        self._socket.linger = 0
        self._socket.bind(address)
        self.address = self._socket.last_endpoint.decode()

    def publish(self, config: Mapping[str, Any]) -> None:
        self._socket.send(json.dumps(dict(config), allow_nan=False).encode())

    def close(self) -> None:
        self._socket.close()


# ---- The program's side


class ConfigFile:
    """The config file, read again whenever it was replaced (one stat() per call)."""

    def __init__(self, path: str):
        self.path = path
        self._seen = None
        self.current: dict = {}
        self.poll()

    def poll(self) -> bool:
        """True if a new config was read."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        if seen == self._seen:
            return False
        self._seen = seen
        with open(self.path) as f:
            self.current = json.load(f)
        return True


class ConfigStream:
    """The config stream: the newest update received, starting from `initial` (the file's
    content: updates sent before the program subscribed are not received)."""

    def __init__(self, address: str, initial: dict | None = None):
        import zmq

        self._socket = zmq.Context.instance().socket(zmq.SUB)
        self._socket.linger = 0
        self._socket.subscribe(b"")
        self._socket.connect(address)
        self._again, self._noblock = zmq.Again, zmq.NOBLOCK
        self.current: dict = dict(initial or {})

    def poll(self) -> bool:
        """True if an update arrived (only the newest queued one counts)."""
        changed = False
        while True:
            try:
                raw = self._socket.recv(self._noblock)
            except self._again:
                return changed
            self.current, changed = json.loads(raw), True

    def close(self) -> None:
        self._socket.close()


class StreamItem:
    """A bsread message as an input item: its channels, and its `image` channel if any."""

    __slots__ = ("pulse_id", "timestamp", "data")

    def __init__(self, message):
        self.pulse_id = message.pulse_id
        self.timestamp = message.global_timestamp
        self.data = message.data

    @property
    def image(self):
        return self.data.get("image")


def ring_kind(base: str) -> type[RingReader] | type[RecordReader]:
    """The reader for the ring at `base`: frames or records, by the magic of its newest
    generation."""
    gens = generations(base)
    if not gens:
        raise FileNotFoundError(f"no ring named {base} in {segment.SHM_DIR}")
    with open(segment.SHM_DIR / generation_name(base, gens[-1]), "rb") as f:
        magic = f.read(8)
    kinds = {layout.MAGIC: RingReader, layout.RECORDS_MAGIC: RecordReader}
    if magic not in kinds:
        raise segment.ShmError(f"{base} is not a frame or record ring (magic {magic!r})")
    return kinds[magic]


class Program:
    """An external program's side of the contract, from its environment.

        with Program() as program:
            for item in program.inputs():
                threshold = program.config.get("threshold", 0)
                program.write(item, {"sum": float(item.image.sum())})

    Items are ring frames (`Frame`: `image`), records (`Record`: `data`, `image`) or bsread
    messages (`StreamItem`: `data`, `image`), each with `pulse_id` and `timestamp`. `write()`
    publishes an output record for an item, unless the item was overwritten while the program
    used it (torn: counted, dropped). SIGTERM ends `inputs()` at the next item or within a
    quarter of a second (unless the program handles SIGTERM itself, or `handle_sigterm` is
    False). `config_stream` takes updates from SHMCAM_CONFIG_STREAM instead of the file.
    """

    def __init__(
        self,
        environ: Mapping[str, str] = os.environ,
        config_stream: bool = False,
        handle_sigterm: bool = True,
    ):
        def need(name: str) -> str:
            value = environ.get(name)
            if not value:
                raise KeyError(f"{name} is not set: is this program started by shmcam?")
            return value

        self.instance = need(INSTANCE)
        self.node = need(NODE)
        self.stopping = False
        self._reader = self._receiver = self._writer = self._stats = self._config = None
        self._taken_ns = 0
        try:
            if environ.get(INPUT_RING):
                base = environ[INPUT_RING]
                self._reader = ring_kind(base)(base, timeout=10)
            elif environ.get(INPUT_STREAM):
                from shmcam.bsread import Receiver

                mode = environ.get(INPUT_MODE, "SUB")
                self._receiver = Receiver(environ[INPUT_STREAM], mode=mode, queue_size=10)
            if environ.get(OUTPUT_RING):  # after the input: a new generation says "attached"
                self._writer = RecordWriter(environ[OUTPUT_RING])
            if environ.get(STATS):
                self._stats = StatsBlock(environ[STATS], writable=True)
            if environ.get(CONFIG):
                self._config = ConfigFile(environ[CONFIG])
            if config_stream or not environ.get(CONFIG):
                if environ.get(CONFIG_STREAM):
                    initial = self._config.current if self._config else None
                    self._config = ConfigStream(environ[CONFIG_STREAM], initial)
        except BaseException:
            self.close()
            raise
        self.output_stream = environ.get(OUTPUT_STREAM)
        self.output_mode = environ.get(OUTPUT_MODE, "PUB")
        if handle_sigterm and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, self._stop)

    def _stop(self, *_):
        self.stopping = True

    @property
    def config(self) -> dict:
        """The current config (checked for updates on every access)."""
        if self._config is None:
            return {}
        self._config.poll()
        return self._config.current

    def inputs(self) -> Iterator[Any]:
        """The input items, as they come, until SIGTERM (or the input ends: a stream never
        does). Without an input, nothing."""
        if self._reader is None and self._receiver is None:
            return
        while not self.stopping:
            if self._reader is not None:
                item = self._reader.wait(_POLL_S)
            else:
                message = self._receiver.receive(timeout=_POLL_S)
                item = None if message is None else StreamItem(message)
            if item is None:
                continue
            self._taken_ns = time.perf_counter_ns()
            if self._stats is not None:
                self._count_input(item)
            yield item

    def _count_input(self, item) -> None:
        s = self._stats
        s.add("frames_in")
        image = item.image
        if image is not None and getattr(image, "ndim", 0) == 2:
            s.set("frame_height", image.shape[0])
            s.set("frame_width", image.shape[1])
            s.set("frame_itemsize", image.itemsize)
            s.add("bytes_in", image.nbytes)
        if self._reader is not None:
            s.set("dropped", self._reader.missed)
            s.set("lag", self._reader.lag)
        else:
            s.set("dropped", self._receiver.rejected)

    def intact(self, item) -> bool:
        """True if a ring item was not overwritten while used (always for stream items)."""
        if self._reader is None:
            return True
        intact = self._reader.validate(item)
        if not intact and self._stats is not None:
            self._stats.set("torn", self._reader.torn)
        return intact

    def write(self, item, channels: Mapping[str, Any]) -> bool:
        """Publish the output record of an input item (its pulse id and timestamp), and account
        its processing time. False, and nothing written, if the item was torn."""
        if self._writer is None:
            raise RuntimeError(f"{OUTPUT_RING} is not set: this program has no output ring")
        if not self.intact(item):
            return False
        self._writer.write(item.pulse_id, item.timestamp, channels)
        self.processed()
        return True

    def processed(self, sent_bytes: int | None = None) -> None:
        """Account the processing time of the item taken last (`write()` does). A program that
        sends its own stream says what it sent: one message of `sent_bytes` payload bytes."""
        if self._stats is None or not self._taken_ns:
            return
        self._stats.record_time(time.perf_counter_ns() - self._taken_ns)
        if sent_bytes is not None:
            self._stats.add("frames_out")
            self._stats.add("bytes_out", sent_bytes)
        self._stats.touch()

    def error(self) -> None:
        """Count a processing error."""
        if self._stats is not None:
            self._stats.add("errors")

    def close(self) -> None:
        """Let go of everything. The output ring stays (closed) for the supervisor, which
        removes it, and a restarted program takes its size over."""
        if self._writer is not None:
            self._writer.close(unlink=False)
        for part in (self._reader, self._receiver, self._stats):
            if part is not None:
                part.close()
        if isinstance(self._config, ConfigStream):
            self._config.close()
        self._reader = self._receiver = self._writer = self._stats = self._config = None

    def __enter__(self) -> Program:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
