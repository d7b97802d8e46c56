"""GET /metrics: the node's instances in the Prometheus text exposition format.

Counters come straight from the instances' shared-memory statistics blocks; the processing
time histogram is folded from quarter octaves to octaves to keep the page small.
"""

from __future__ import annotations

import psutil

COUNTERS = (  # statistics key, metric name, help
    ("frames_in", "shmcam_frames_in_total", "Frames taken from the input (source or ring)."),
    ("frames_out", "shmcam_frames_out_total", "Frames written to the ring or sent."),
    ("dropped", "shmcam_frames_dropped_total", "Input frames missed (lapped, queue full)."),
    ("torn", "shmcam_frames_torn_total", "Frames overwritten while processed (discarded)."),
    ("errors", "shmcam_errors_total", "Processing or source errors."),
)
GAUGES = (
    ("stream_clients", "shmcam_clients", "Connected stream clients."),
    ("forwards", "shmcam_forwarder_clients", "Connected DataBuffer feed clients (forwarder)."),
    ("lag", "shmcam_ring_lag_frames", "Frames between the newest in the ring and the reader."),
    ("cpu", "shmcam_cpu_percent", "CPU of the instance process, percent of one core."),
    ("memory", "shmcam_memory_bytes", "Resident memory of the instance process."),
    ("restarts", "shmcam_restarts_total", "Restarts of the instance by the supervisor."),
)


WORKERS = (  # per worker of a parallel pipeline: its statistics key, metric name, help
    ("frames", "shmcam_worker_frames_total", "Frames a worker took."),
    ("results", "shmcam_worker_results_total", "Results a worker handed to the collector."),
    ("dropped", "shmcam_worker_frames_dropped_total", "Frames a worker skipped or missed."),
    ("torn", "shmcam_worker_frames_torn_total", "Frames overwritten under a worker."),
    ("errors", "shmcam_worker_errors_total", "Processing errors of a worker."),
    ("processing_s_total", "shmcam_worker_processing_seconds_total", "Processing time."),
    ("restarts", "shmcam_worker_restarts_total", "Restarts of a worker."),
    ("fps", "shmcam_worker_results_per_second", "Results per second of a worker."),
    ("cpu", "shmcam_worker_cpu_percent", "CPU of a worker process, percent of one core."),
)


def _labels(**labels) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def render(node: str, instances: dict) -> str:
    """`instances` maps kind ("camera", "pipeline") to {id: Instance}."""
    lines = []
    rows = [
        (kind, iid, inst, {**inst.statistics(), **inst.counters()})
        for kind, table in instances.items()
        for iid, inst in table.items()
    ]
    for key, name, text in (*COUNTERS, *GAUGES):
        lines += [
            f"# HELP {name} {text}",
            f"# TYPE {name} {'counter' if name.endswith('_total') else 'gauge'}",
        ]
        for kind, iid, _, stats in rows:
            if stats.get(key) is not None:
                lines.append(f"{name}{_labels(node=node, kind=kind, instance=iid)} {stats[key]}")
    for key, name, text in WORKERS:
        lines += [
            f"# HELP {name} {text}",
            f"# TYPE {name} {'counter' if name.endswith('_total') else 'gauge'}",
        ]
        for kind, iid, _, stats in rows:
            for worker in stats.get("workers") or ():
                if worker.get(key) is not None:
                    label = _labels(node=node, kind=kind, instance=iid, worker=worker["worker"])
                    lines.append(f"{name}{label} {worker[key]}")
    name = "shmcam_processing_seconds"
    lines += [f"# HELP {name} Processing time per frame.", f"# TYPE {name} histogram"]
    for kind, iid, inst, stats in rows:
        buckets = inst.histogram()
        if not buckets:
            continue
        total = 0
        for index, (upper, count) in enumerate(buckets):
            total += count
            if index % 4 == 3:
                label = _labels(node=node, kind=kind, instance=iid, le=f"{upper:.6g}")
                lines.append(f"{name}_bucket{label} {total}")
        lines.append(
            f"{name}_bucket{_labels(node=node, kind=kind, instance=iid, le='+Inf')} {total}"
        )
        lines.append(f"{name}_count{_labels(node=node, kind=kind, instance=iid)} {total}")
        lines.append(
            f"{name}_sum{_labels(node=node, kind=kind, instance=iid)} "
            f"{stats.get('proc_ns_total', 0) / 1e9}"
        )
    net = psutil.net_io_counters()
    for name, value, kind, text in (
        ("shmcam_node_cpu_percent", psutil.cpu_percent(), "gauge", "CPU of the node."),
        (
            "shmcam_node_memory_percent",
            psutil.virtual_memory().percent,
            "gauge",
            "Memory in use on the node.",
        ),
        (
            "shmcam_node_network_sent_bytes_total",
            net.bytes_sent,
            "counter",
            "Bytes sent by the node.",
        ),
        (
            "shmcam_node_network_received_bytes_total",
            net.bytes_recv,
            "counter",
            "Bytes received by the node.",
        ),
    ):
        lines += [
            f"# HELP {name} {text}",
            f"# TYPE {name} {kind}",
            f"{name}{_labels(node=node)} {value}",
        ]
    return "\n".join(lines) + "\n"
