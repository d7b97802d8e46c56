"""The systemd unit and sysusers file, checked offline by systemd's own tools.

systemd does not run here, but `systemd-analyze verify` parses a unit as the manager would; it
exits 0 even on unknown keys and bad values, so any output at all is a failure. The unit is
rendered with ExecStart pointing at this venv's `shmcam`, since verify requires an existing
binary.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from shmcam.supervisor.instances import STOP_TIMEOUT
from shmcam.supervisor.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "shmcam-supervisor.service"
COORDINATOR_UNIT = ROOT / "systemd" / "shmcam-coordinator.service"
UNITS = pytest.mark.parametrize("unit", [UNIT, COORDINATOR_UNIT], ids=["supervisor", "coordinator"])
SYSUSERS = ROOT / "systemd" / "sysusers.d" / "shmcam.conf"
INSTALLED_SHMCAM = "/opt/shmcam/bin/shmcam"  # the venv of README's "Deploy on a node"


def render(tmp_path: Path, extra: str = "", unit_file: Path = UNIT) -> Path:
    """The unit with ExecStart running this venv's shmcam, written under tmp_path."""
    text = unit_file.read_text()
    assert text.count(f"ExecStart={INSTALLED_SHMCAM} ") == 1, "ExecStart changed: fix render()"
    shmcam = Path(sys.executable).parent / "shmcam"
    assert shmcam.is_file(), f"{shmcam} is missing: is shmcam installed in this venv?"
    unit = tmp_path / unit_file.name
    unit.write_text(text.replace(f"ExecStart={INSTALLED_SHMCAM} ", f"ExecStart={shmcam} ") + extra)
    return unit


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60)


def directives(path: Path) -> dict[str, list[str]]:
    """`Section.Key` -> its values in order (keys like Environment= repeat)."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(f"{section}.{key}", []).append(value)
    return found


@UNITS
def test_verify_prints_nothing(tmp_path, unit):
    result = analyze("verify", str(render(tmp_path, unit_file=unit)))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_verify_output_catches_a_bad_key(tmp_path):
    """The check above can fail: a typo exits 0 but prints a warning."""
    result = analyze("verify", str(render(tmp_path, "RestartSecs=5s\n")))
    assert result.returncode == 0
    assert "RestartSecs" in result.stdout + result.stderr


@UNITS
def test_security_exposure_stays_low(tmp_path, unit):
    result = analyze(
        "security", "--offline=true", "--no-pager", str(render(tmp_path, unit_file=unit))
    )
    assert result.returncode == 0, result.stderr
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert level, result.stdout
    assert float(level.group(1)) <= 2.0, result.stdout  # 1.9 "OK" when written


def test_unit_runs_the_supervisor_as_the_issue_asks():
    unit = directives(UNIT)
    service = {
        key.partition(".")[2]: values for key, values in unit.items() if key.startswith("Service.")
    }
    assert service["ExecStart"] == [
        f"{INSTALLED_SHMCAM} supervisor --config /etc/shmcam/shmcam.toml"
    ]
    assert service["User"] == ["shmcam"] and "DynamicUser" not in service
    assert service["Restart"] == ["on-failure"]
    # SIGTERM to the supervisor alone, which stops its instances (killing one that does not
    # stop within STOP_TIMEOUT) before systemd kills what is left.
    assert service["KillMode"] == ["mixed"]
    assert int(service["TimeoutStopSec"][0].removesuffix("s")) > STOP_TIMEOUT
    environment = dict(value.split("=", 1) for value in service["Environment"])
    assert environment["OMP_NUM_THREADS"] == "1"
    assert environment["NUMBA_CACHE_DIR"].startswith("%C/shmcam/")
    assert service["CacheDirectory"] == ["shmcam"]
    # The state directory is the data directory the supervisor uses by default.
    assert service["StateDirectory"] == ["shmcam"]
    assert Settings().data_dir == Path("/var/lib/shmcam")
    assert service["RuntimeDirectory"] == ["shmcam"]
    assert service["ConfigurationDirectory"] == ["shmcam"]
    # /dev/shm stays the node's: no private /dev or IPC namespace, no IPC removal.
    assert service["RemoveIPC"] == ["no"]
    assert "PrivateDevices" not in service and "PrivateIPC" not in service


def test_sysusers_creates_a_system_user(tmp_path):
    """systemd-sysusers applies the file to an empty root: a system uid (logind's RemoveIPC
    spares it), no login shell, the data directory as home."""
    (tmp_path / "etc").mkdir()
    result = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", "-"],
        input=SYSUSERS.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    users = {
        line.split(":")[0]: line.split(":")
        for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
    }
    name, _, uid, gid, _, home, shell = users["shmcam"]
    assert 0 < int(uid) < 1000
    assert (home, shell) == ("/var/lib/shmcam", "/usr/sbin/nologin")
    groups = {
        line.split(":")[0]: line.split(":")[2]
        for line in (tmp_path / "etc" / "group").read_text().splitlines()
    }
    assert groups["shmcam"] == gid


def test_coordinator_unit_runs_the_coordinator_from_the_cluster_toml():
    service = {
        k.split(".", 1)[1]: v
        for k, v in directives(COORDINATOR_UNIT).items()
        if k.startswith("Service.")
    }
    assert service["ExecStart"] == [
        f"{INSTALLED_SHMCAM} coordinator --config /etc/shmcam/cluster.toml"
    ]
    assert service["User"] == ["shmcam"] and service["Restart"] == ["on-failure"]
    assert service["StateDirectory"] == ["shmcam-coordinator"]
