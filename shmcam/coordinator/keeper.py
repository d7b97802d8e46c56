"""Keeps the cluster as configured, from the view's polls (and at once when a node goes up or
down):

- one copy of every instance: an instance found on several nodes (a node back after a crash
  or a partition, whose copy was replaced meanwhile) keeps the copy the coordinator placed last
  (or, after a restart of the coordinator, the newest) and loses the others;
- permanent instances run somewhere: each is assigned a node, and the node's REST permanent
  table (`/api/v1/proxy/permanent`) lists exactly what is assigned to it, so the node restarts
  it on its own if it dies; one that runs nowhere (its node died) is placed again, cameras
  before pipelines, with a RestartPolicy back-off if starting fails.

The assignments are rebuilt from the nodes' permanent tables at start: the coordinator can be
restarted at any moment without restarting anything.
"""

from __future__ import annotations

import logging
import threading
import time

from shmcam.restarts import RestartPolicy
from shmcam.supervisor.errors import NotFound

from .cluster import Cluster
from .view import NodeState

log = logging.getLogger(__name__)

CAMERA = "camera:"
MISSING_GRACE = 5.0  # s a permanent instance may be missing on its node before it is asked again


class Keeper:
    def __init__(self, cluster: Cluster, interval: float):
        self.cluster = cluster
        self.view = cluster.view
        self.interval = interval
        self.assigned: dict[str, str] = {}  # permanent instance -> node
        self._retry: dict[str, tuple[RestartPolicy, float]] = {}
        self._missing_since: dict[str, float] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    @property
    def table(self) -> dict[str, str]:
        return self.cluster.permanent

    def start(self) -> None:
        threading.Thread(target=self._run, name="keeper", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        """Check now (a node went up or down, the permanent table changed)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.check()
            except Exception:
                log.exception("keeper check failed")

    def check(self) -> None:
        with self._lock:
            self._adopt()
            self._dedupe()
            self._reconcile_tables()
            self._start_missing()

    def set_permanent(self, table: dict[str, str]) -> None:
        """A new permanent table (already checked): applied at the next check, now."""
        self.cluster.permanent = dict(table)
        self.wake()

    # --- what runs where ----------------------------------------------------------------------
    def _adopt(self) -> None:
        """Assignments the coordinator does not know (after its restart): from the nodes'
        permanent tables; forgotten for instances no longer permanent."""
        for state in self.view.usable():
            for name in state.snapshot.get("permanent", {}):
                if name in self.table and name not in self.assigned:
                    self.assigned[name] = state.name
        for name in list(self.assigned):
            if name not in self.table:
                del self.assigned[name]

    def _dedupe(self) -> None:
        for kind in ("pipeline", "camera"):
            copies: dict[str, list[NodeState]] = {}
            for state in self.view.usable():
                for instance_id in state.instances(kind):
                    copies.setdefault(instance_id, []).append(state)
            for instance_id, states in copies.items():
                if len(states) < 2:
                    continue
                keep = self.assigned.get(instance_id)
                if keep not in [s.name for s in states]:
                    keep = self.view.where(kind, instance_id)[0].name  # the newest
                for state in states:
                    if state.name != keep:
                        self._stop_copy(state, kind, instance_id, keep)

    def _stop_copy(self, state: NodeState, kind: str, instance_id: str, keep: str) -> None:
        log.warning(
            "%s %s runs on %s and %s: stopping it on %s (one copy in the cluster)",
            kind,
            instance_id,
            state.name,
            keep,
            state.name,
        )
        table = state.snapshot.get("permanent", {})
        try:
            if instance_id in table:
                rest = {k: v for k, v in table.items() if k != instance_id}
                state.client.call("POST", "/api/v1/proxy/permanent", json=rest)
                state.snapshot["permanent"] = rest
            root = "cam" if kind == "camera" else "pipeline"
            state.client.call("DELETE", f"/api/v1/{root}/{instance_id}")
        except NotFound:
            pass
        except Exception as error:
            log.error("could not stop %s %s on %s: %s", kind, instance_id, state.name, error)
        self.view.forget(state, kind, instance_id)

    def _reconcile_tables(self) -> None:
        """Each node's REST permanent table: exactly what is assigned to it."""
        for state in self.view.usable():
            wanted = {
                n: self._node_value(n) for n, node in self.assigned.items() if node == state.name
            }
            if state.snapshot.get("permanent", {}) != wanted:
                try:
                    self._assert_table(state)
                except Exception as error:
                    log.error("node %s: permanent table not set: %s", state.name, error)

    def _node_value(self, name: str) -> str:
        """The node's entry for a permanent instance: its config, or camera:<name>."""
        value = self.table[name]
        if value.startswith(CAMERA):
            return value
        if value not in self.cluster.store.config_names("pipeline") and value in (
            self.cluster.store.config_names("camera")
        ):
            return CAMERA + value
        return value

    # --- starting what runs nowhere --------------------------------------------------------------
    def _start_missing(self) -> None:
        cameras_first = sorted(self.table, key=lambda n: not self._node_value(n).startswith(CAMERA))
        now = time.monotonic()
        for name in cameras_first:
            value = self._node_value(name)
            kind = "camera" if value.startswith(CAMERA) else "pipeline"
            found = self.view.where(kind, name)
            if found:
                self.assigned.setdefault(name, found[0].name)
                self._missing_since.pop(name, None)
                continue
            assigned = self.view.node(self.assigned.get(name, ""))
            if assigned is not None and assigned.usable:
                # its node restarts it on its own; one stopped by hand there is started again
                missing = self._missing_since.setdefault(name, now)
                if now - missing > MISSING_GRACE:
                    self._missing_since.pop(name)
                    self._assert_table(assigned)
                continue
            self._missing_since.pop(name, None)
            policy, due = self._retry.get(name, (RestartPolicy(), 0.0))
            if now < due:
                continue
            try:
                node = self._place_and_start(name, value, kind)
            except Exception as error:
                delay = policy.next_delay()
                self._retry[name] = (policy, now + delay)
                log.error("permanent %s did not start (again in %.1f s): %s", name, delay, error)
                continue
            policy.started()
            self._retry[name] = (policy, 0.0)
            log.info("permanent %s runs on node %s", name, node)

    def _place_and_start(self, name: str, value: str, kind: str) -> str:
        cluster = self.cluster
        if kind == "camera":
            state = cluster.camera_node(name, start=False)
            if state is None:
                state = cluster.state(cluster.place("camera", name, name, None, None).node)
                config = cluster.camera_config(name)
                cluster.sync.push(state.client, cluster.sync.camera_needs(name, config))
        else:
            config = cluster.store.get_config("pipeline", value)
            with cluster.locked("pipeline", name):
                state, effective, _ = cluster._home(name, config)
                cluster.sync.push(state.client, cluster.sync.pipeline_needs(value, effective))
        self.assigned[name] = state.name
        cluster.view.claim(kind, name, state.name)
        self._assert_table(state)
        return state.name

    def _assert_table(self, state: NodeState) -> None:
        """Set the node's permanent table to its assignments; it starts what does not run."""
        wanted = {n: self._node_value(n) for n, node in self.assigned.items() if node == state.name}
        state.client.call("POST", "/api/v1/proxy/permanent", json=wanted)
        state.snapshot["permanent"] = wanted
