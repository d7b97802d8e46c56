"""The supervisor's watchdog: a thread that looks at every instance twice a second.

Three policies, each in its own place:
- restart: a permanent instance, or a camera running pipelines read, that dies comes back
  after the delay of its RestartPolicy (shmcam/restarts.py: first try within a second, longer
  while it keeps failing at once, afresh after a healthy run); its port stays reserved.
- idle: an on-demand instance without clients for `no_client_timeout` seconds is stopped (a
  camera or pipeline counts the pipelines reading it as clients; a FILE mode pipeline writes
  a file, and an external program sending its own stream has clients shmcam cannot count:
  never idle).
- stuck: an instance whose main loop made no progress for `stuck_timeout` seconds (its
  statistics are touched twice a second) is killed, and restarted if it must run. An external
  program is judged by what it does, which its instance process reports (workers/external.py:
  it progresses while its counters or output move, or while its input ring is not fed).
It also keeps the record rings of cascades written exactly while they are read.
"""

from __future__ import annotations

import logging
import threading
import time

from shmcam.restarts import RestartPolicy
from shmcam.workers.pipeline_types import pipeline_type, program_output

from .instances import Instance
from .manager import Manager

log = logging.getLogger(__name__)

PERIOD = 0.5
DEFAULT_NO_CLIENT_TIMEOUT = 10.0


class Watchdog:
    def __init__(self, manager: Manager, stuck_timeout: float):
        self.manager = manager
        self.stuck_timeout = stuck_timeout
        self._policies: dict[int, RestartPolicy] = {}  # by id() of the Instance
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self.manager.stopping.wait(PERIOD):
            try:
                self.check(time.monotonic())
            except Exception:
                log.exception("watchdog check failed")

    def check(self, now: float) -> None:
        for instance in self.manager.everything():
            code = instance.poll()
            if code is not None:
                self._ended(instance, code, now)
                continue
            instance.update_rates()
            if instance.ready and not instance.progressed_within(self.stuck_timeout):
                log.error(
                    "%s %s made no progress for %g s (stuck in its function?): killing it",
                    instance.kind,
                    instance.id,
                    self.stuck_timeout,
                )
                instance.last_error = f"killed: no progress for {self.stuck_timeout:g} s"
                instance.kill()
            elif not instance.permanent:
                self._stop_if_idle(instance, now)
        self.manager.sync_record_outputs()

    # --- restart ------------------------------------------------------------------------------
    def _needed(self, instance: Instance) -> bool:
        """Permanent instances, and cameras that running pipelines read, come back if they die."""
        return instance.permanent or (
            instance.kind == "camera" and bool(self.manager._readers_of(instance))
        )

    def _policy(self, instance: Instance) -> RestartPolicy:
        return self._policies.setdefault(id(instance), RestartPolicy())

    def _ended(self, instance: Instance, code: int, now: float) -> None:
        if self.manager.stopping.is_set() or not self._needed(instance):
            instance.restart_at = None
            if not instance.reaped:
                instance.reaped = True
                instance.release_segments()
                self._policies.pop(id(instance), None)
                log.info(
                    "%s %s ended with exit code %s%s",
                    instance.kind,
                    instance.id,
                    code,
                    f" ({instance.finished})" if instance.finished else "",
                )
            return
        if instance.restart_at is None:
            delay = self._policy(instance).next_delay()
            log.warning(
                "%s %s died (exit code %s): restarting in %.1f s",
                instance.kind,
                instance.id,
                code,
                delay,
            )
            instance.release_segments()
            instance.restart_at = now + delay
        elif now >= instance.restart_at:
            instance.restarts += 1
            try:
                if instance.kind == "pipeline":
                    self.manager.reopen_input(instance)
                instance.start()
                self._policy(instance).started()
            except Exception as error:
                instance.last_error = str(error)
                instance.restart_at = None  # the next check schedules another try
                log.error("restart of %s failed: %s", instance.id, error)

    # --- idle ---------------------------------------------------------------------------------
    def _stop_if_idle(self, instance: Instance, now: float) -> None:
        timeout = instance.config.get("no_client_timeout", DEFAULT_NO_CLIENT_TIMEOUT)
        if timeout is None or timeout <= 0 or not instance.ready:
            return  # an instance still starting has had no chance to get clients
        counters = instance.counters()
        busy = (
            counters.get("clients", 0) + counters.get("forwarder_clients", 0) > 0  # DataBuffer
            or not streams_through_shmcam(instance.config)
            or bool(self.manager._readers_of(instance))
        )
        if busy or instance.idle_since is None:
            instance.idle_since = None if busy else now
            return
        if now - instance.idle_since >= timeout:
            log.info("%s %s: no clients for %g s, stopping", instance.kind, instance.id, timeout)
            instance.stop()


def streams_through_shmcam(config: dict) -> bool:
    """Whether shmcam sends the instance's stream (and so counts its clients): not for a
    FILE mode pipeline (it writes a file) nor an external program without an output ring."""
    if config.get("mode") == "FILE":
        return False
    if pipeline_type(config) == "external":
        return program_output(config) == "ring"
    return True
