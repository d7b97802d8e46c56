"""The coordinator's view of the cluster, learnt from the nodes in the background.

One thread per node polls its `/api/v1/node` snapshot (its load and every live instance) once
per `poll_interval`; requests are answered from the latest snapshots, never by asking every
node. A node that has not answered for `node_timeout` seconds is down: what it runs no longer
counts, and the keeper (keeper.py) re-places its permanent instances. Nothing here is state
the nodes cannot give back: a restarted coordinator knows everything after one poll.

Between a placement and the next poll that shows it, the coordinator *claims* the instance on
its node, so that a second request for the same camera a moment later finds it there instead
of starting a second connection elsewhere.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .client import NodeClient
from .settings import NodeRule

log = logging.getLogger(__name__)

CLAIM_SECONDS = 20.0  # longer than an instance may take to start and show in a poll


@dataclass
class NodeState:
    rule: NodeRule
    client: NodeClient
    up: bool = False
    last_answer: float = 0.0  # monotonic
    snapshot: dict = field(default_factory=dict)
    error: str = "not polled yet"

    @property
    def name(self) -> str:
        return self.rule.name

    @property
    def usable(self) -> bool:
        return self.up and self.rule.enabled

    def instances(self, kind: str) -> dict[str, dict]:
        return self.snapshot.get("instances", {}).get(kind, {}) if self.up else {}

    @property
    def load(self) -> dict:
        return self.snapshot.get("load", {}) if self.up else {}


class ClusterView:
    def __init__(
        self,
        rules: tuple[NodeRule, ...],
        token: str | None,
        poll_interval: float,
        node_timeout: float,
        on_change: Callable[[], None] = lambda: None,
    ):
        self.poll_interval = poll_interval
        self.node_timeout = node_timeout
        self.on_change = on_change  # a node went up or down
        self.token = token
        self.lock = threading.Lock()
        self.nodes: dict[str, NodeState] = {}
        self._claims: dict[tuple[str, str], tuple[str, float]] = {}
        self._stopping = threading.Event()
        self._first_round = threading.Event()
        self.set_rules(rules)

    # --- nodes and their pollers ----------------------------------------------------------------
    def set_rules(self, rules: tuple[NodeRule, ...]) -> None:
        """A new node table: pollers start for new nodes and end for removed ones; nodes
        whose rule changed keep their state."""
        with self.lock:
            old = self.nodes
            self.nodes = {}
            for rule in rules:
                state = old.get(rule.name)
                if state is None or state.rule.url != rule.url:
                    state = NodeState(rule, NodeClient(rule.name, rule.url, self.token))
                    threading.Thread(
                        target=self._poll, args=(state,), name=f"poll {rule.name}", daemon=True
                    ).start()
                else:
                    state.rule = rule
                self.nodes[rule.name] = state

    def wait_first_round(self, timeout: float) -> None:
        """Until every node answered or failed once (a restarted coordinator's full view)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                states = list(self.nodes.values())
            if all(s.error != "not polled yet" for s in states):
                return
            time.sleep(0.01)

    def stop(self) -> None:
        self._stopping.set()

    def _poll(self, state: NodeState) -> None:
        while not self._stopping.is_set():
            with self.lock:
                if self.nodes.get(state.name) is not state:
                    return  # removed from the table (or its URL changed)
            started = time.monotonic()
            try:
                snapshot = state.client.get("/api/v1/node", timeout=self.node_timeout)
            except Exception as error:
                self._failed(state, str(error), started)
            else:
                self._answered(state, snapshot, started)
            self._stopping.wait(max(0.0, self.poll_interval - (time.monotonic() - started)))

    def _answered(self, state: NodeState, snapshot: dict, now: float) -> None:
        with self.lock:
            was_up = state.up
            state.snapshot, state.up, state.last_answer, state.error = snapshot, True, now, ""
            for key, (node, _) in list(self._claims.items()):
                if node == state.name and key[1] in snapshot["instances"].get(key[0], {}):
                    del self._claims[key]  # the poll shows it: no claim needed any more
        if not was_up:
            log.info("node %s is up (%s)", state.name, state.rule.url)
            self.on_change()

    def _failed(self, state: NodeState, error: str, now: float) -> None:
        with self.lock:
            state.error = error
            down = state.up and now - state.last_answer >= self.node_timeout
            if down:
                state.up = False
        if down:
            log.warning("node %s is down: %s", state.name, error)
            self.on_change()

    # --- what runs where ------------------------------------------------------------------------
    def usable(self) -> list[NodeState]:
        with self.lock:
            return [s for s in self.nodes.values() if s.usable]

    def node(self, name: str) -> NodeState | None:
        with self.lock:
            return self.nodes.get(name)

    def where(self, kind: str, instance_id: str) -> list[NodeState]:
        """The usable nodes running (or claimed to run) an instance, newest start first."""
        with self.lock:
            found = [
                s for s in self.nodes.values() if s.usable and instance_id in s.instances(kind)
            ]
            claim = self._claims.get((kind, instance_id))
            if claim is not None:
                node, until = claim
                state = self.nodes.get(node)
                if time.monotonic() > until or state is None or not state.usable:
                    del self._claims[(kind, instance_id)]
                elif state not in found:
                    found.insert(0, state)
        return sorted(found, key=lambda s: _started(s, kind, instance_id), reverse=True)

    def info(self, kind: str, instance_id: str) -> tuple[NodeState, dict] | None:
        """The newest running copy's node and info, None if it runs nowhere (per the polls)."""
        for state in self.where(kind, instance_id):
            info = state.instances(kind).get(instance_id)
            if info is not None:
                return state, info
        return None

    def claim(self, kind: str, instance_id: str, node: str) -> None:
        with self.lock:
            self._claims[(kind, instance_id)] = (node, time.monotonic() + CLAIM_SECONDS)

    def release(self, kind: str, instance_id: str, node: str) -> None:
        with self.lock:
            if self._claims.get((kind, instance_id), (None,))[0] == node:
                del self._claims[(kind, instance_id)]

    def forget(self, state: NodeState, kind: str, instance_id: str) -> None:
        """The instance was stopped on that node: drop it from the view until the next poll."""
        with self.lock:
            state.snapshot.get("instances", {}).get(kind, {}).pop(instance_id, None)
            self._claims.pop((kind, instance_id), None)

    def updated(self, state: NodeState, kind: str, instance_id: str, config: dict) -> None:
        """An instance's config changed through the coordinator: seen at once, not a poll
        later."""
        with self.lock:
            info = state.snapshot.get("instances", {}).get(kind, {}).get(instance_id)
            if info is not None:
                info["config"] = config

    def instances(self, kind: str) -> dict[str, tuple[NodeState, dict]]:
        """Every running instance of a kind in the cluster (the newest copy of duplicates)."""
        found: dict[str, tuple[NodeState, dict]] = {}
        for state in self.usable():
            for instance_id, info in state.instances(kind).items():
                other = found.get(instance_id)
                if other is None or _start(info) > _start(other[1]):
                    found[instance_id] = (state, info)
        return found


def _start(info: dict) -> float:
    return info.get("started") or 0.0


def _started(state: NodeState, kind: str, instance_id: str) -> float:
    info = state.instances(kind).get(instance_id)
    return float("inf") if info is None else _start(info)  # a claim (not shown yet): newest
