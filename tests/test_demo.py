"""The README's main job (`shmcam demo`) and the ring-only demo run, report and clean up."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def shmcam(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "shmcam.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def demo_segments() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("shmcam.demo")}


def test_demo_runs_supervisor_camera_and_pipeline_and_cleans_up():
    before = demo_segments()
    out = shmcam("demo", "--size", "320x240", "--rate", "50", "--seconds", "4")
    assert out.returncode == 0, out.stderr
    assert re.search(r"pipeline stream: tcp://127\.0\.0\.1:\d+", out.stdout), out.stdout
    lines = [line for line in out.stdout.splitlines() if line.startswith("camera")]
    assert len(lines) >= 2, out.stdout
    rate = float(re.search(r"pipeline in\s+([\d.]+)Hz", lines[-1]).group(1))
    received = int(re.search(r"client (\d+) msgs", lines[-1]).group(1))
    assert rate > 30 and received > 50, lines[-1]
    assert "cleaned up" in out.stdout
    assert demo_segments() == before
    workdir = re.search(r"supervisor in (\S+) ", out.stdout).group(1)
    assert not os.path.exists(workdir)


def test_ring_demo_prints_live_rates_and_leaves_nothing_behind():
    out = shmcam(
        "ring-demo", "--size", "320x240", "--rate", "50", "--readers", "2", "--seconds", "3"
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("camera")]
    assert lines, out.stdout
    rates = [float(v) for v in re.findall(r"reader\d\s+([\d.]+) fps", lines[-1])]
    assert len(rates) == 2 and all(r > 30 for r in rates), lines[-1]
    node = re.search(r"ring shmcam\.(demo\d+)\.", out.stdout).group(1)
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"shmcam.{node}.")]


def test_help_exists_for_every_command():
    for args in ([], ["demo"], ["ring-demo"], ["supervisor"]):
        out = shmcam(*args, "--help")
        assert out.returncode == 0 and "usage: shmcam" in out.stdout


def test_bad_size_is_a_clear_error():
    for command in ("demo", "ring-demo"):
        out = shmcam(command, "--size", "big")
        assert out.returncode != 0 and "--size must look like 1280x960" in out.stderr
