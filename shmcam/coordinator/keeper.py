"""Keeps the cluster as configured, from the view's polls (and at once when a node goes up or
down):

- one copy of every instance: an instance found on several nodes (a node back after a crash
  or a partition, whose copy was replaced meanwhile) keeps the copy the coordinator placed last
  (or, after a restart of the coordinator, the newest) and loses the others;
- permanent instances run somewhere: each is assigned a node, and the node's REST permanent
  table (`/api/v1/proxy/permanent`) lists exactly what is assigned to it, so the node restarts
  it on its own if it dies; one that runs nowhere (its node died) is placed again, cameras
  before pipelines, with a RestartPolicy back-off if starting fails.

The keeper's loop only decides; every call to a node runs in a worker, one at a time per node
(a node cut off by a partition holds its own worker, never the keeper), and a start in flight
is not started again. The assignments are rebuilt from the nodes' permanent tables at start:
the coordinator can be restarted at any moment without restarting anything.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

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
        self._lock = threading.RLock()  # the keeper's decisions and assignments
        self._workers = ThreadPoolExecutor(16, thread_name_prefix="keeper")
        self._inflight: dict[str, Future] = {}  # by node name, or "start:<instance>:<n>"
        self._starting: dict[str, str] = {}  # permanent instance -> the node it is started on
        self._generation: dict[str, int] = {}  # starts given up on (their node went away)
        self._node_locks: dict[str, threading.Lock] = {}

    @property
    def table(self) -> dict[str, str]:
        return self.cluster.permanent

    def start(self) -> None:
        threading.Thread(target=self._run, name="keeper", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._workers.shutdown(wait=False, cancel_futures=True)

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

    # --- workers ----------------------------------------------------------------------------------
    def _submit(self, key: str, work) -> bool:
        """Run `work()` in a worker unless the one of `key` is still running."""
        running = self._inflight.get(key)
        if running is not None and not running.done():
            return False
        if self._stopping.is_set():
            return False
        self._inflight[key] = self._workers.submit(self._guarded, key, work)
        return True

    @staticmethod
    def _guarded(key: str, work) -> None:
        try:
            work()
        except Exception as error:
            log.error("%s: %s", key, error)

    def _on_node(self, state: NodeState, call) -> None:
        """`call()` against one node, never two at once on it."""
        with self._lock:
            lock = self._node_locks.setdefault(state.name, threading.Lock())
        with lock:
            call()

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
                        self._submit(
                            f"{state.name}:stop:{instance_id}",
                            lambda s=state, i=instance_id, k=kind, w=keep: self._stop_copy(
                                s, k, i, w
                            ),
                        )

    def _stop_copy(self, state: NodeState, kind: str, instance_id: str, keep: str) -> None:
        log.warning(
            "%s %s runs on %s and %s: stopping it on %s (one copy in the cluster)",
            kind,
            instance_id,
            state.name,
            keep,
            state.name,
        )

        def stop() -> None:
            if instance_id in state.snapshot.get("permanent", {}):
                self._post_table(state)  # without it: the node stops it
            root = "cam" if kind == "camera" else "pipeline"
            try:
                state.client.call("DELETE", f"/api/v1/{root}/{instance_id}")
            except NotFound:
                pass

        self._on_node(state, stop)
        self.view.forget(state, kind, instance_id)

    def _wanted(self, state: NodeState) -> dict[str, str]:
        with self._lock:
            return {
                n: self._node_value(n) for n, node in self.assigned.items() if node == state.name
            }

    def _reconcile_tables(self) -> None:
        """Each node's REST permanent table: exactly what is assigned to it."""
        for state in self.view.usable():
            if state.snapshot.get("permanent", {}) != self._wanted(state):
                self._submit(
                    state.name, lambda s=state: self._on_node(s, lambda: self._post_table(s))
                )

    def _post_table(self, state: NodeState) -> None:
        """Set the node's permanent table to its assignments; it starts what does not run."""
        wanted = self._wanted(state)
        state.client.call("POST", "/api/v1/proxy/permanent", json=wanted)
        state.snapshot["permanent"] = wanted

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
                    self._submit(
                        assigned.name,
                        lambda s=assigned: self._on_node(s, lambda: self._post_table(s)),
                    )
                continue
            self._missing_since.pop(name, None)
            target = self._starting.get(name)
            if target is not None and not (self.view.node(target) or assigned).usable:
                # a start still waiting on a node that went away meanwhile: start it anew
                self._starting.pop(name)
                self._generation[name] = self._generation.get(name, 0) + 1
            policy, due = self._retry.get(name, (RestartPolicy(), 0.0))
            if now >= due:
                self._submit(
                    f"start:{name}:{self._generation.get(name, 0)}",
                    lambda n=name, v=value, k=kind, p=policy: self._start(n, v, k, p),
                )

    def _start(self, name: str, value: str, kind: str, policy: RestartPolicy) -> None:
        """In a worker: place a permanent instance, give its node what it needs, start it."""
        try:
            node = self._place_and_start(name, value, kind)
        except Exception as error:
            delay = policy.next_delay()
            with self._lock:
                self._retry[name] = (policy, time.monotonic() + delay)
            log.error("permanent %s did not start (again in %.1f s): %s", name, delay, error)
            return
        policy.started()
        with self._lock:
            self._retry[name] = (policy, 0.0)
        log.info("permanent %s runs on node %s", name, node)

    def _place_and_start(self, name: str, value: str, kind: str) -> str:
        cluster = self.cluster
        if kind == "camera":
            state = cluster.camera_node(name, start=False)
            if state is None:
                state = cluster.state(cluster.place("camera", name, name, None, None).node)
                config = cluster.stored_camera(name)
                cluster.sync.push(state.client, cluster.sync.camera_needs(name, config))
        else:
            config = cluster.store.get_config("pipeline", value)
            with cluster.locked("pipeline", name):
                state, effective, _ = cluster._home(name, config)
                cluster.sync.push(state.client, cluster.sync.pipeline_needs(value, effective))
        with self._lock:
            self.assigned[name] = state.name
            self._starting[name] = state.name
        cluster.view.claim(kind, name, state.name)
        try:
            self._on_node(state, lambda: self._post_table(state))
        finally:
            with self._lock:
                if self._starting.get(name) == state.name:
                    del self._starting[name]
        return state.name
