"""The README's main job: `shmcam demo` runs, shows live rates and cleans up."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def test_demo_prints_live_rates_and_leaves_nothing_behind():
    out = subprocess.run(
        [sys.executable, "-m", "shmcam.cli.main", "demo", "--size", "320x240", "--rate", "50",
         "--readers", "2", "--seconds", "3"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("camera")]
    assert lines, out.stdout
    rates = [float(v) for v in re.findall(r"reader\d\s+([\d.]+) fps", lines[-1])]
    assert len(rates) == 2 and all(r > 30 for r in rates), lines[-1]
    node = re.search(r"ring shmcam\.(demo\d+)\.", out.stdout).group(1)
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"shmcam.{node}.")]


def test_help_exists_for_every_command():
    for args in ([], ["demo"]):
        out = subprocess.run([sys.executable, "-m", "shmcam.cli.main", *args, "--help"],
                             capture_output=True, text=True)
        assert out.returncode == 0 and "usage: shmcam" in out.stdout


def test_bad_size_is_a_clear_error():
    out = subprocess.run([sys.executable, "-m", "shmcam.cli.main", "demo", "--size", "big"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "--size must look like 1280x960" in out.stderr
