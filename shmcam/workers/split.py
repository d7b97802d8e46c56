"""How a pipeline's frames are split among parallel workers: CamServer's keys, the configs
that cannot be split, and the names of what the workers share in /dev/shm.

Kept light (no numba, no user code): the supervisor validates configs with `parse` and reads
the workers' statistics with `CrewStatistics`. The machinery is in parallel.py (the instance)
and member.py (a worker); docs/parallel.md says what users get.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil

from shmcam.processing.config import parse as parse_processing
from shmcam.processing.functions import BUILTIN
from shmcam.shm import StatsBlock, ring_base, segment, segment_name
from shmcam.shm.board import Board

from .pipeline_types import pipeline_type

KEYS = ("processing_threads", "multiprocessing", "thread_buffer_size", "send_buffer_size")
MAX_WORKERS = 32
SEND_BUFFER = 40  # CamServer's default send_buffer_size: results waiting to be put in order
MAX_BUFFER = 10_000
SPLIT_TYPES = ("processing", "stream")
WHY_NOT_SPLIT = {
    "custom": "a custom pipeline's generator makes its frames one after the other",
    "store": "a store pipeline writes every frame, in order, into one file",
    "fanout": "a fanout pipeline only passes frames on (its workers are the pipelines that "
    "read it)",
    "fanin": "a fanin pipeline only passes results on",
}


@dataclass(frozen=True)
class Split:
    workers: int  # 1: the pipeline's own process does the work
    processes: bool  # workers are processes (multiprocessing), else threads
    send_buffer: int  # results held back at most while an earlier one is awaited
    # frames that may wait for a free worker, oldest skipped beyond (thread_buffer_size, as
    # CamServer's queue); 0 when not given: latest wins (board.py, "Tickets")
    queue: int = 0


def _count(config: dict, key: str, default: int, low: int, high: int) -> int:
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{key} must be an integer from {low} to {high}, got {value!r}")
    return value


def _flag(config: dict, key: str, default: bool) -> bool:
    value = config.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


def parse(config: dict) -> Split:
    """The split a config asks for; ValueError naming the key when it asks for one that
    cannot be (the supervisor answers 400 with it). Whether a user function may be split is
    known only once it is loaded: the instance checks that (parallel.py)."""
    workers = _count(config, "processing_threads", 0, 0, MAX_WORKERS)
    processes = _flag(config, "multiprocessing", False)
    queue = _count(config, "thread_buffer_size", 0, 1, MAX_BUFFER)
    send_buffer = _count(config, "send_buffer_size", SEND_BUFFER, 1, MAX_BUFFER)
    if _flag(config, "processing_manager", False):
        raise ValueError(
            "processing_manager: true asks for a multiprocessing Manager queue to feed the "
            "workers; shmcam's workers read the frames from shared memory and share no "
            "queue: remove processing_manager"
        )
    if not _flag(config, "spawn_send_thread", True):
        raise ValueError(
            "spawn_send_thread: false is not supported: shmcam always sends the results from "
            "the pipeline's own process, apart from its workers; remove spawn_send_thread"
        )
    if workers <= 1:
        return Split(1, False, send_buffer)
    kind = pipeline_type(config)
    if kind not in SPLIT_TYPES:
        raise ValueError(
            f"processing_threads {workers}: {WHY_NOT_SPLIT.get(kind, kind)}, there is "
            f"nothing to split; use processing_threads 0"
        )
    _stateless(config, workers)
    _one_input(config, workers)
    return Split(workers, processes, send_buffer, queue)


def _one_input(config: dict, workers: int) -> None:
    """Refuse what the workers' frames cannot carry: bsread data joined to camera frames
    (the join holds frames in the pipeline's process), and a send buffer besides the
    results waiting in order (send_buffer_size)."""
    if pipeline_type(config) == "processing":
        joined = [k for k in ("bsread_address", "bsread_channels") if config.get(k)]
        if joined:
            raise ValueError(
                f"processing_threads {workers} with {joined[0]}: frames joined with bsread "
                f"data are not shared out among workers; use processing_threads 0, or a "
                f"stream pipeline merging the camera's stream with bsread_address2"
            )
    if config.get("buffer_size"):
        raise ValueError(
            f"processing_threads {workers} with buffer_size: the results of parallel workers "
            f"wait in order in send_buffer_size; remove buffer_size"
        )


def _stateless(config: dict, workers: int) -> None:
    """Refuse processing that carries state from frame to frame: split among workers, each
    would see only its share of the frames."""
    why = None
    if pipeline_type(config) == "processing":
        settings = parse_processing(config)
        if abs(settings.averaging) > 1:
            why = f"averaging {settings.averaging} keeps the mean of the last frames"
        elif settings.image_averaging > 1:
            why = f"image_averaging {settings.image_averaging} keeps the mean of the last frames"
    builtin = BUILTIN.get(config.get("function"))
    if why is None and builtin is not None and not builtin.splittable:
        why = f"function {config['function']!r} keeps state from frame to frame"
    if why is not None:
        raise ValueError(
            f"processing_threads {workers}: {why}, and {workers} workers would each see "
            f"only a share of the frames; use processing_threads 0, or do this in a "
            f"pipeline of its own"
        )


# --- what the workers share ---------------------------------------------------------------
def prefix(node: str, instance: str) -> str:
    """Every segment of an instance's workers starts with this."""
    return segment_name(node, instance, "crew") + "."


def board_name(node: str, instance: str) -> str:
    return segment_name(node, instance, "crew", "board")


def configs_base(node: str, instance: str) -> str:
    """The record ring of the configs in force (one record per update)."""
    return ring_base(node, instance, "crew", "config")


def relay_base(node: str, instance: str) -> str:
    """The record ring a stream input's messages are relayed through to the workers."""
    return ring_base(node, instance, "crew", "input")


def results_base(node: str, instance: str, member: int) -> str:
    """A worker process's result ring."""
    return ring_base(node, instance, "crew", f"w{member}")


def member_stats_name(node: str, instance: str, member: int) -> str:
    return segment_name(node, instance, "crew", f"w{member}", "stats")


def segments(node: str, instance: str) -> list[str]:
    return segment.list_segments(prefix(node, instance))


class CrewStatistics:
    """The workers' figures of a split pipeline, read from shared memory by the supervisor:
    per worker its pid, restarts, results per second, CPU and processing times."""

    def __init__(self, node: str, instance: str, workers: int):
        self.node, self.instance, self.workers = node, instance, workers
        self._blocks: dict[int, StatsBlock] = {}
        self._board: Board | None = None
        self._then = (time.monotonic(), {})  # time, results per worker then
        self._rates: dict[int, float] = {}
        self._cpu: dict[int, float] = {}
        self._procs: dict[int, psutil.Process] = {}

    def _block(self, member: int) -> StatsBlock | None:
        block = self._blocks.get(member)
        if block is None:
            try:
                block = self._blocks[member] = StatsBlock(
                    member_stats_name(self.node, self.instance, member)
                )
            except (FileNotFoundError, segment.ShmError):
                return None
        return block

    def _info(self, member: int) -> tuple[int, int]:
        if self._board is None:
            try:
                self._board = Board(board_name(self.node, self.instance), writable=False)
            except (FileNotFoundError, segment.ShmError):
                return 0, 0
        return self._board.member_info(member)

    def update(self) -> None:
        """Rates and CPU since the last call (the supervisor's periodic update)."""
        now, counts = time.monotonic(), {}
        then, before = self._then
        for member in range(self.workers):
            block = self._block(member)
            if block is None:
                continue
            counts[member] = block.snapshot()["frames_out"]
            if member in before:
                self._rates[member] = (counts[member] - before[member]) / max(1e-3, now - then)
            self._cpu[member] = self._cpu_of(member)
        self._then = (now, counts)

    def _cpu_of(self, member: int) -> float | None:
        pid = self._info(member)[0]
        proc = self._procs.get(member)
        try:
            if proc is None or proc.pid != pid:
                proc = self._procs[member] = psutil.Process(pid)
                proc.cpu_percent()
                return None
            return proc.cpu_percent()
        except (psutil.Error, ValueError):
            return None

    def snapshot(self, threads: bool) -> list[dict]:
        """One entry per worker (threads share their process's pid and CPU)."""
        out = []
        for member in range(self.workers):
            block = self._block(member)
            if block is None:
                continue
            counters = block.snapshot()
            pid, restarts = self._info(member)
            out.append(
                {
                    "worker": member,
                    "pid": pid or None,
                    "restarts": restarts,
                    "fps": round(self._rates.get(member, 0.0), 2),
                    "cpu": None if threads else self._cpu.get(member),
                    "frames": counters["frames_in"],
                    "results": counters["frames_out"],
                    "dropped": counters["dropped"],
                    "torn": counters["torn"],
                    "errors": counters["errors"],
                    "processing_ms_p50": counters["proc_ms_p50"],
                    "processing_ms_p99": counters["proc_ms_p99"],
                    "processing_s_total": counters["proc_ns_total"] / 1e9,
                }
            )
        return out

    def close(self) -> None:
        for block in self._blocks.values():
            block.close()
        self._blocks.clear()
        if self._board is not None:
            self._board.close()
            self._board = None
