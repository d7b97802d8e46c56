"""The channels between an instance and its supervisor: control in, reports out.

Two pipes besides the standard streams, their descriptors named by environment variables:
- control (`SHMCAM_CONTROL_FD`, supervisor to instance): the instance spec as the first JSON
  line, then config updates `{"config": {...}, "seq": n}` and, for pipelines, whether to write
  their record ring `{"write_records": bool}` (a local reader came or went). Its end means the
  supervisor is gone: the instance stops too.
- reports (`SHMCAM_REPORT_FD`, instance to supervisor): JSON lines `{"ready": {...}}`,
  `{"error": "..."}`, `{"finished": "..."}`, `{"online": bool, "reason": "..."}`, the answer to
  each config update (`{"config_applied": n}` or `{"config_refused": n, "error": "..."}`) and
  the instance's log records with their level and time (`{"log": {...}}`).
stdout and stderr carry nothing the supervisor interprets: what user code prints lands in the
instance log as text, and cannot pass for a report. Stop is SIGTERM (a signal gets through to an
instance however busy it is; the supervisor kills what does not stop in time).
"""

from __future__ import annotations

import json
import logging
import os
import threading

CONTROL_FD = "SHMCAM_CONTROL_FD"
REPORT_FD = "SHMCAM_REPORT_FD"

log = logging.getLogger(__name__)
_report_lock = threading.Lock()


def _fd(name: str) -> int:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        raise SystemExit(f"{name} is not set: instances are started by the supervisor") from None


def read_spec(control) -> dict:
    line = control.readline()
    if not line:
        raise SystemExit("no instance spec on the control channel")
    return json.loads(line)


def report(**message) -> None:
    """Send one report; safe from any thread (one line is one write)."""
    data = (json.dumps(message, default=str) + "\n").encode()
    with _report_lock:
        view = memoryview(data)
        while view:
            view = view[os.write(_fd(REPORT_FD), view) :]


class ReportHandler(logging.Handler):
    """The instance's log records, sent to the supervisor with their level and time."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            report(
                log={
                    "time": record.created,
                    "level": record.levelname,
                    "name": record.name,
                    "message": message,
                }
            )
        except Exception:
            self.handleError(record)


class Control:
    """Receives config updates in a background thread; `stop` is set by SIGTERM (see
    __main__) or by the end of the control channel."""

    def __init__(self, stream, write_records: bool = False):
        self.stop = threading.Event()
        self.write_records = write_records  # the newest word of the supervisor on it
        self._stream = stream
        self._lock = threading.Lock()
        self._update: tuple[int, dict] | None = None
        threading.Thread(target=self._listen, name="control", daemon=True).start()

    @classmethod
    def from_environment(cls) -> tuple[Control, dict]:
        """The control channel the supervisor opened, and the spec it sent first."""
        stream = os.fdopen(_fd(CONTROL_FD), "r", encoding="utf-8")
        spec = read_spec(stream)
        return cls(stream, bool(spec.get("write_records"))), spec

    def _listen(self) -> None:
        for line in self._stream:
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("ignoring a control line that is not JSON: %.80s", line)
                continue
            if isinstance(message.get("config"), dict):
                with self._lock:  # only the newest update matters
                    self._update = (message.get("seq", 0), message["config"])
            if "write_records" in message:
                self.write_records = bool(message["write_records"])
        self.stop.set()

    def apply_update(self, apply) -> None:
        """Apply the newest config update sent since the last call, if any, with
        `apply(config)`, and tell the supervisor whether it took: an update `apply` refuses
        (raises) leaves the previous config in force."""
        with self._lock:
            update, self._update = self._update, None
        if update is None:
            return
        seq, config = update
        try:
            apply(config)
        except Exception as error:
            log.exception("config update refused; keeping the previous config")
            report(config_refused=seq, error=f"{type(error).__name__}: {error}")
        else:
            report(config_applied=seq)
