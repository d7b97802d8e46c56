"""GET /metrics: valid Prometheus exposition, parsed by the reference client library."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families
from supervisor_harness import SIM_CAMERA, receive


def test_metrics_expose_instances_in_prometheus_format(supervisor):
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    stream = sup.call(
        "POST",
        "/api/v1/pipeline",
        params={"instance_id": "p"},
        json={"camera_name": "sim", "no_client_timeout": 0},
    )["stream"]
    receive(stream, 20)
    response = requests.get(sup.url + "/metrics", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    frames = {s.labels["instance"]: s.value for s in families["shmcam_frames_in"].samples}
    assert frames["p"] >= 20 and frames["sim"] >= 20
    assert all(s.labels["node"] == sup.node for s in families["shmcam_frames_in"].samples)
    histogram = families["shmcam_processing_seconds"]
    assert histogram.type == "histogram"
    pipeline = [s for s in histogram.samples if s.labels["instance"] == "p"]
    count = next(s.value for s in pipeline if s.name.endswith("_count"))
    inf = next(s.value for s in pipeline if s.labels.get("le") == "+Inf")
    assert count == inf >= 20
    bounds = [
        (float(s.labels["le"]), s.value)
        for s in pipeline
        if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"
    ]
    assert [v for _, v in bounds] == sorted(v for _, v in bounds)  # cumulative
    assert families["shmcam_node_cpu_percent"].samples[0].value >= 0
