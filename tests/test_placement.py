"""Placement rules on their own (coordinator/placement.py): pins, cameras, load."""

from __future__ import annotations

import pytest

from shmcam.coordinator.placement import Candidate, Load, estimate, frame_rate_bytes, place
from shmcam.coordinator.settings import NodeRule

IDLE = {"cpu": 5.0, "memory_percent": 20.0, "rx": 0.0, "tx": 0.0, "cores": 48}


NOTHING = Load()


def node(name, load=None, planned=NOTHING, **rule):
    return Candidate(NodeRule(name, f"http://{name}:8888", **rule), load or IDLE, planned)


def test_a_pinned_instance_goes_to_its_node_with_its_port():
    chosen = place(
        "pipeline",
        "sp",
        "cam",
        None,
        None,
        [node("a"), node("b", instances=("sp:5554",), expanding=False)],
        Load(),
    )
    assert (chosen.node, chosen.port) == ("b", 5554)


def test_a_pinned_camera_takes_its_pipelines_along():
    candidates = [node("a"), node("b", cameras=("cam",))]
    assert place("camera", "cam", "cam", None, None, candidates, Load()).node == "b"
    assert place("pipeline", "p", "cam", None, None, candidates, Load()).node == "b"


def test_a_pipeline_goes_where_its_camera_runs_to_read_its_ring():
    busy = {**IDLE, "cpu": 90.0}
    chosen = place("pipeline", "p", "cam", "b", None, [node("a"), node("b", busy)], Load())
    assert chosen.node == "b" and not chosen.remote_camera


def test_a_pipeline_of_a_group_reads_its_camera_from_another_node():
    candidates = [node("a", groups=("x",)), node("b", groups=("beamline",))]
    chosen = place("pipeline", "p", "cam", "a", "beamline", candidates, Load())
    assert chosen.node == "b" and chosen.remote_camera
    assert "reads camera cam's stream from a" in chosen.why


def test_least_loaded_by_cpu_memory_and_network_not_instance_count():
    network_busy = {**IDLE, "rx": 1.1e9}  # 88 % of 10 Gb/s
    memory_busy = {**IDLE, "memory_percent": 95.0}
    candidates = [node("a", network_busy), node("b", memory_busy), node("c", {**IDLE, "cpu": 50})]
    assert place("camera", "new", "new", None, None, candidates, Load()).node == "c"


def test_what_is_pending_and_what_the_instance_adds_count():
    big = estimate("camera", {"size_x": 2560, "size_y": 2160, "frame_rate": 100})
    assert big.rx == frame_rate_bytes({"size_x": 2560, "size_y": 2160, "frame_rate": 100})
    assert big.rx == 2560 * 2160 * 2 * 100
    # two 1.1 GB/s cameras placed a moment ago on "a", nothing yet in its measured load
    candidates = [node("a", planned=big + big), node("b", {**IDLE, "cpu": 30})]
    assert place("camera", "third", "third", None, None, candidates, big).node == "b"


def test_non_expanding_nodes_take_only_what_is_pinned_there():
    candidates = [node("a", expanding=False), node("b", {**IDLE, "cpu": 99})]
    assert place("camera", "x", "x", None, None, candidates, Load()).node == "b"
    with pytest.raises(ValueError, match="no node of group 'g' can take camera x"):
        place("camera", "x", "x", None, "g", candidates, Load())


def test_a_pin_to_a_node_that_is_down_gives_way():
    """Down nodes are not candidates: a pinned permanent instance fails over."""
    chosen = place("pipeline", "sp", None, None, None, [node("a")], Load())
    assert chosen.node == "a" and chosen.port is None


def test_measured_and_estimated_load_the_larger_counts():
    """A camera between frames (or a simulation, which sends nothing over the network) still
    takes its estimated flow; traffic the node measures beyond its estimates counts too."""
    flow = Load(rx=1e9)
    quiet = node("a", planned=flow)  # measures nothing, runs a 1 GB/s camera
    loud = node("b", {**IDLE, "rx": 1e9})  # measures 1 GB/s of something else
    assert quiet.busy(Load()) == loud.busy(Load())
    assert node("c").busy(Load())[0] < quiet.busy(Load())[0]
