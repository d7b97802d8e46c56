"""The supervisor's I/O with its instances: one thread and one selector for every pipe.

Per instance three pipes come in (reports, stdout, stderr, see workers/control.py) and one goes
out (control). A send never blocks its caller: the message waits in the instance's outbox until
the pipe takes it, so an instance that stops reading (stuck in C code holding the GIL) fills
only its own outbox and never freezes the REST API, the watchdog or a shutdown. Config updates
replace one still waiting (the instance applies only the newest anyway), so an outbox holds at
most the spec and one update. Lines read are bounded in length: a flood from an instance costs
it its own log lines, not the supervisor's memory.

Instances are started from one long-lived thread: PR_SET_PDEATHSIG (workers/__main__.py) fires
when the *thread* that forked a child ends, so an instance started from a short-lived thread
would die with that thread.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import selectors
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from shmcam.workers.control import CONTROL_FD, REPORT_FD

log = logging.getLogger(__name__)

MAX_LINE = 1 << 20  # a longer line is cut (reports are small; log lines are text)
READ_SIZE = 1 << 16


class Link:
    """One instance process's pipes as the hub serves them."""

    def __init__(self, hub: Hub, process: subprocess.Popen, control: int, readers: dict):
        self.hub = hub
        self.process = process
        self._control = control
        self._readers = readers  # fd -> (handler of a line, buffer)
        self._outbox: collections.deque[tuple[str | None, bytes]] = collections.deque()
        self._partial = memoryview(b"")

    @property
    def pending(self) -> int:
        """Messages not yet taken by the instance (a stuck instance's grow to at most 2)."""
        return len(self._outbox) + bool(self._partial)

    def send(self, message: dict, replaces: str | None = None) -> None:
        """Queue a message; one of kind `replaces` still waiting is dropped for it."""
        data = (json.dumps(message) + "\n").encode()
        with self.hub.lock:
            if self._control < 0:
                return
            if replaces is not None:
                kept = [item for item in self._outbox if item[0] != replaces]
                self._outbox = collections.deque(kept)
            self._outbox.append((replaces, data))
            self.hub.want_write(self)

    def close(self) -> None:
        """Close the control pipe: the instance sees its end (it stops if it still can)."""
        self.hub.close_control(self)

    # --- the hub's side (its thread, under its lock) ---------------------------------------------
    def _write(self) -> bool:
        """Write what the pipe takes; True while something is left."""
        while True:
            if not self._partial:
                if not self._outbox:
                    return False
                self._partial = memoryview(self._outbox.popleft()[1])
            try:
                written = os.write(self._control, self._partial)
            except BlockingIOError:
                return True
            except OSError:  # the instance is gone: nothing will be read any more
                self._outbox.clear()
                self._partial = memoryview(b"")
                return False
            self._partial = self._partial[written:]

    def _read(self, fd: int) -> bool:
        """Read what the pipe has and hand out complete lines; False at its end."""
        handle, buffer, _ = self._readers[fd]
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return True
        except OSError:
            chunk = b""
        if not chunk:
            if buffer:
                handle(bytes(buffer))
            return False
        buffer += chunk
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) > MAX_LINE:
                    handle(bytes(buffer[:MAX_LINE]) + b" [cut]")
                    del buffer[:]
                return True
            handle(bytes(buffer[:end]))
            del buffer[: end + 1]


class Hub:
    def __init__(self):
        self.lock = threading.RLock()  # a callback may send
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="spawner")
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="instance-io", daemon=True)
        self._thread.start()

    def start(
        self,
        argv: list[str],
        env: dict[str, str],
        on_report: Callable[[dict], None],
        on_output: Callable[[str, str], None],
    ) -> Link:
        """Start a process with its channels; reports and output lines go to the callbacks
        (called in the hub's thread: keep them short and never let them block)."""
        control_r, control_w = os.pipe()
        report_r, report_w = os.pipe()
        env = {**env, CONTROL_FD: str(control_r), REPORT_FD: str(report_w)}
        try:
            process = self._spawner.submit(
                subprocess.Popen,
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(control_r, report_w),
                env=env,
                start_new_session=True,  # Ctrl-C at the terminal is the supervisor's alone
            ).result()
        except BaseException:
            for fd in (control_r, control_w, report_r, report_w):
                os.close(fd)
            raise
        os.close(control_r)
        os.close(report_w)
        readers = {
            report_r: (
                lambda line: _report(line, on_report),
                bytearray(),
                lambda: os.close(report_r),
            ),
            process.stdout.fileno(): (
                lambda line: on_output("stdout", _text(line)),
                bytearray(),
                process.stdout.close,
            ),
            process.stderr.fileno(): (
                lambda line: on_output("stderr", _text(line)),
                bytearray(),
                process.stderr.close,
            ),
        }
        link = Link(self, process, control_w, readers)
        os.set_blocking(control_w, False)
        with self.lock:
            for fd in readers:
                os.set_blocking(fd, False)
                self._selector.register(fd, selectors.EVENT_READ, link)
        self._wake()
        return link

    def want_write(self, link: Link) -> None:
        """(Under the lock.) The link has something to write."""
        try:
            self._selector.modify(link._control, selectors.EVENT_WRITE, link)
        except KeyError:
            self._selector.register(link._control, selectors.EVENT_WRITE, link)
        self._wake()

    def close_control(self, link: Link) -> None:
        with self.lock:
            if link._control < 0:
                return
            try:
                self._selector.unregister(link._control)
            except KeyError:
                pass
            os.close(link._control)
            link._control = -1
            link._outbox.clear()
            link._partial = memoryview(b"")

    def close(self) -> None:
        with self.lock:
            self._closed = True
        self._wake()
        self._thread.join(5)
        self._spawner.shutdown(wait=True)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # a wake-up is pending already

    def _loop(self) -> None:
        while True:
            events = self._selector.select()
            with self.lock:
                if self._closed:
                    return
                for key, mask in events:
                    if key.data is None:
                        while True:
                            try:
                                if not os.read(self._wake_r, 4096):
                                    break
                            except BlockingIOError:
                                break
                        continue
                    self._serve(key.fileobj, key.data, mask)

    def _serve(self, fd: int, link: Link, mask: int) -> None:
        if mask & selectors.EVENT_WRITE and fd == link._control:
            if not link._write():
                self._selector.unregister(fd)
            return
        try:
            alive = link._read(fd)
        except Exception:  # a callback failed: never let it end the loop
            log.exception("handling the output of pid %s", link.process.pid)
            alive = True
        if not alive:
            self._selector.unregister(fd)
            link._readers[fd][2]()  # close it


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace")


def _report(line: bytes, on_report: Callable[[dict], None]) -> None:
    try:
        report = json.loads(line)
    except ValueError:
        log.warning("an instance sent a report that is not JSON: %.80r", line)
        return
    if isinstance(report, dict):
        on_report(report)
