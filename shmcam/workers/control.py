"""The control channel of an instance: JSON lines on stdin, one reply channel on stdout.

The supervisor writes the instance's spec as the first line, then config updates
(`{"config": {...}}`) and `{"stop": true}`. End of input means the supervisor is gone:
the instance stops too, so a killed supervisor never leaves orphans behind.
The instance reports `{"ready": {...}}` or `{"error": "..."}` on stdout; logs go to stderr.
"""

from __future__ import annotations

import json
import logging
import sys
import threading

log = logging.getLogger(__name__)


def read_spec() -> dict:
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("no instance spec on stdin")
    return json.loads(line)


def report(**message) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class Control:
    """Receives config updates and stop requests from the supervisor in a background thread."""

    def __init__(self, stream=None):
        self.stop = threading.Event()
        self._stream = stream or sys.stdin
        self._lock = threading.Lock()
        self._config: dict | None = None
        threading.Thread(target=self._listen, name="control", daemon=True).start()

    def _listen(self) -> None:
        for line in self._stream:
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("ignoring a control line that is not JSON: %.80s", line)
                continue
            if message.get("stop"):
                break
            if isinstance(message.get("config"), dict):
                with self._lock:
                    self._config = message["config"]
        self.stop.set()

    def take_config(self) -> dict | None:
        """The newest config sent since the last call, or None (applied from the next frame)."""
        with self._lock:
            config, self._config = self._config, None
        return config
