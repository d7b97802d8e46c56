"""External pipeline instance: a program in any language, and what shmcam does for it.

This process (a shmcam worker like any instance) is the program's parent. It
- sets up the program's side of the contract (shmcam/external.py, docs/external.md): the
  output record ring, the config file and config stream, the statistics block, the
  environment; then starts the program (launch.py: its own process group, death with this
  process, the instance's memory limit inherited);
- publishes each record of the output ring as one bsread message of the instance's stream
  (output.py), with the output keys and flow control of every pipeline;
- writes live config updates to the config file and stream, and acknowledges them;
- tells the supervisor while the program makes progress (the watchdog's stuck rule);
- stops the program on SIGTERM (SIGTERM to its group, SIGKILL after STOP_TIMEOUT), and ends
  when it ends, with its exit code: the supervisor restarts the instance if it must run.
A shmcam process in between, rather than the supervisor starting the program itself, keeps one
instance one process as the supervisor sees it (control and report pipes, stop, restart,
logs, statistics work unchanged), keeps ring reading and bsread encoding out of the
supervisor, and lets a program need neither ZMQ nor bsread.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from shmcam import external as contract
from shmcam.shm import RecordReader, ShmError, StatsBlock, generations

from . import launch
from .control import Control, report
from .gate import Gate
from .output import Output, open_output, select

log = logging.getLogger(__name__)

STATS_PERIOD = 0.5  # statistics, and progress reports to the supervisor
STOP_TIMEOUT = 4.0  # SIGTERM to SIGKILL of the program: within the supervisor's 5 s for us


class Progress:
    """Whether the program makes progress, for the supervisor's stuck rule. It does while
    anything it updates moves (its statistics' frames_in, processing time, update time and
    frames_out, the records it writes), and while its input ring is not fed: waiting is not
    being stuck. A program whose input this process cannot see (a stream) or that has none
    is never taken for stuck."""

    def __init__(self, input_ring: str | None):
        self.input_ring = input_ring
        self._watch = None
        self._last: tuple | None = None

    def made(self, marks: tuple) -> bool:
        if self.input_ring is None:
            return True
        seen = (marks, self._fed())
        moved = self._last is None or seen[0] != self._last[0] or seen[1] == self._last[1]
        self._last = seen
        return moved

    def _fed(self) -> tuple | None:
        """A token of what the input ring's writer has published (None: no ring yet)."""
        if self._watch is None:
            try:
                self._watch = contract.ring_kind(self.input_ring)(self.input_ring)
            except (FileNotFoundError, ShmError):
                return None
        return self._watch.published()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()


class ExternalInstance:
    def __init__(self, spec: dict):
        self.spec = spec
        self.config = spec["config"]
        self.gate = Gate(self.config)
        program = spec["program"]
        self.argv = program["argv"]
        self.output_kind = program["output"]
        self.config_file = Path(program["config_file"])
        self.process: subprocess.Popen | None = None
        self.reader: RecordReader | None = None
        self.output: Output | None = None
        self.config_stream: contract.ConfigPublisher | None = None
        self.progress: Progress | None = None
        self.stats = StatsBlock(spec["stats"], create=True)
        self.sent = 0
        try:
            self._start(program)
        except BaseException:
            self.close()
            raise

    def _start(self, program: dict) -> None:
        spec = self.spec
        contract.write_config(self.config_file, self.config)
        self.config_stream = contract.ConfigPublisher()
        source = spec.get("input") or {}
        input_ring = source.get("records") or (None if source.get("stream") else spec["ring"])
        self.progress = Progress(input_ring)
        output_ring = output_stream = None
        mode = self.config.get("mode") or "PUB"
        if self.output_kind == "ring":
            output_ring = contract.create_output_ring(
                spec["node"], spec["instance_id"], spec["ring_slots"]
            )
            self.reader = RecordReader(output_ring)  # before the program writes its first
            self.output = open_output(spec, self.config, self.stats)
        elif self.output_kind == "stream":
            output_stream = f"tcp://*:{spec['port']}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHMCAM_")}
        env.update(program["env"])
        env.update(
            contract.environment(
                spec["node"],
                spec["instance_id"],
                input_ring=input_ring,
                input_stream=source.get("stream"),
                input_mode=source.get("mode") or "SUB",
                output_ring=output_ring,
                output_stream=output_stream,
                output_mode=mode,
                config=self.config_file,
                config_stream=self.config_stream.address,
                stats=spec["stats"],
            )
        )
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-S", launch.__file__, str(os.getpid()), *self.argv],
            env=env,
            stdin=subprocess.DEVNULL,  # stdout and stderr are ours: the instance log
            process_group=0,
        )
        log.info("started %s (pid %d)", " ".join(self.argv), self.process.pid)
        report(program={"pid": self.process.pid})

    def attached(self) -> bool:
        """Whether the program has taken its output ring (made the generation after ours);
        a program without one counts as attached once started."""
        return self.reader is None or max(generations(self.reader.base), default=0) > 0

    def apply(self, config: dict) -> None:
        """A live update: the program sees it in its config file (replaced at once) and on
        the config stream; flow control applies from the next record."""
        gate = Gate(config)
        contract.write_config(self.config_file, config)
        self.config_stream.publish(config)
        self.config, self.gate = config, gate
        if self.output is not None:
            self.output.apply(config)

    def run(self, control: Control) -> int:
        ready = False
        next_stats = 0.0
        while not control.stop.is_set():
            control.apply_update(self.apply)
            code = self.process.poll()
            if code is not None:
                return self.ended(code)
            if not ready and self.attached():
                output = self.output.ready() if self.output is not None else {}
                report(ready={"stream_port": self.spec["port"], **output})
                ready = True
            now = time.monotonic()
            if now >= next_stats:
                self.publish_stats()
                next_stats = now + STATS_PERIOD
                if self.progress.made(self.marks()):
                    report(progress=True)
            if self.reader is None:
                control.stop.wait(0.2)
                continue
            record = self.reader.wait(0.2)
            if record is None:
                continue
            done = self.publish(record)
            if done:
                log.info("pipeline finished: %s", done)
                report(finished=done)
                return 0
        return 0

    def publish(self, record) -> str | None:
        """Send a record as a bsread message (copied first: ZMQ sends later, when the program
        may have reused the slot); why the run is over, or None."""
        passed = self.gate.passed(record.pulse_id)
        if passed:
            return passed
        if not self.gate.admit(record.pulse_id, record.timestamp):
            return None
        data = {
            key: value.copy() if isinstance(value, np.ndarray) else value
            for key, value in select(record.data, self.output.keys).items()
        }
        if not self.reader.validate(record):
            return None  # overwritten while copied: the program is faster than we publish
        if data and self.output.send(data, record.pulse_id, record.timestamp):
            self.sent += 1
            self.stats.add("frames_out")
        return self.gate.finished(record.pulse_id, self.sent)

    def marks(self) -> tuple:
        """What moves while the program works."""
        counters = self.stats.snapshot()
        written = 0 if self.reader is None else self.reader.received + self.reader.missed
        return tuple(
            counters[k] for k in ("frames_in", "proc_ns_total", "updated_ns", "frames_out")
        ) + (written,)

    def publish_stats(self) -> None:
        """The fields shmcam writes for what it publishes (the program writes the rest)."""
        if self.output is not None:
            self.output.periodic()
            for field, value in self.output.counters().items():
                if field != "dropped":  # the program's count of its input's
                    self.stats.set(field, value)

    def ended(self, code: int) -> int:
        """The program ended by itself: so does the instance, with its exit code."""
        if code == 0:
            report(finished="the program exited")
        elif code < 0:
            report(error=f"the program was killed by {signal.Signals(-code).name}")
            code = 128 - code
        else:
            report(error=f"the program exited with code {code}")
        log.info("%s ended (exit code %d)", self.argv[0], code)
        return code

    def stop_program(self) -> None:
        """SIGTERM to the program's group, SIGKILL after STOP_TIMEOUT; whatever is left of the
        group (helpers it started) goes too."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %g s: killing it", self.argv[0], STOP_TIMEOUT)
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        _signal_group(process.pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop the program and let go of everything. The output ring, config file and
        statistics block are the supervisor's to remove."""
        self.stop_program()
        for part in (self.output, self.reader, self.config_stream, self.progress, self.stats):
            if part is not None:
                part.close()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def run(spec: dict, control: Control) -> int:
    instance = ExternalInstance(spec)
    try:
        return instance.run(control)
    finally:
        instance.close()
