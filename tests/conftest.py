"""Shared fixtures: real processes and shared-memory segments, always cleaned up."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shmcam.shm import segment

TESTS = Path(__file__).resolve().parent
_counter = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def no_segment_left_after_the_suite():
    """Whatever this session's tests and their processes created in /dev/shm (all named after
    the `node` fixture) must be gone at the end."""
    yield
    left = segment.list_segments(f"shmcam.t{os.getpid()}n")
    assert not left, f"the test suite left shared-memory segments behind: {left}"


@pytest.fixture
def node():
    """A node name unique to this test; the test fails if it leaves a segment behind."""
    name = f"t{os.getpid()}n{next(_counter)}"
    yield name
    leaked = segment.remove_all(f"shmcam.{name}.")
    assert not leaked, f"test leaked shared-memory segments: {leaked}"


class Procs:
    """Helper processes started from tests/ringproc.py, killed at the end of the test."""

    def __init__(self):
        self.started: list[subprocess.Popen] = []

    def start(self, *args: str) -> subprocess.Popen:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [sys.executable, str(TESTS / "ringproc.py"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.started.append(proc)
        return proc

    @staticmethod
    def expect(proc: subprocess.Popen, line: str) -> None:
        got = proc.stdout.readline().strip()
        assert got == line, (
            f"expected {line!r} from helper, got {got!r}; "
            f"stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        )

    @staticmethod
    def go(proc: subprocess.Popen) -> None:
        proc.stdin.write("go\n")
        proc.stdin.flush()

    @staticmethod
    def result(proc: subprocess.Popen, timeout: float = 60) -> dict:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"helper failed ({proc.returncode}): {err}"
        assert "leaked" not in err and "Traceback" not in err, err
        return json.loads(out.strip().splitlines()[-1])

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture
def procs():
    p = Procs()
    try:
        yield p
    finally:
        p.kill_all()


ROOT = TESTS.parent
C_FLAGS = ("-O2", "-std=c11", "-D_DEFAULT_SOURCE", "-Wall", "-Wextra", "-Werror", "-pedantic")


@pytest.fixture
def cc(tmp_path):
    """Build a C program against include/shmcam with the real gcc: `cc(source, *flags)` returns
    the executable's path (in tmp_path)."""

    def build(source: Path, *flags: str) -> Path:
        exe = tmp_path / (Path(source).stem + "".join(f.replace("=", "_") for f in flags))
        built = subprocess.run(
            ["gcc", *C_FLAGS, *flags, "-I", str(ROOT / "include"), str(source), "-o", str(exe)],
            capture_output=True,
            text=True,
        )
        assert built.returncode == 0, f"gcc failed on {source}:\n{built.stderr}"
        return exe

    return build


# The bsread golden messages captured from PSI's reference sender (see their README.md).
GOLDEN_DIR = TESTS / "data" / "bsread"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The captured reference bsread messages (see their README.md)."""
    if not GOLDEN_DIR.is_dir():
        pytest.fail(f"bsread golden messages not found at {GOLDEN_DIR}")
    return GOLDEN_DIR


@pytest.fixture
def supervisor(tmp_path, node):
    """Start real supervisors: `supervisor(cameras={...}, token=..., permanent=...)`.

    Each is stopped (SIGTERM) at the end; its instances must be gone and its segments removed.
    """
    from supervisor_harness import Supervisor

    started = []

    def start(**kwargs):
        sup = Supervisor(tmp_path / f"s{len(started)}", node, **kwargs)
        started.append(sup)
        return sup.start()

    yield start
    for sup in started:
        sup.stop()
        assert not sup.segments(), f"segments left after SIGTERM: {sup.segments()}"


@pytest.fixture
def iocs():
    """Start test IOCs (tests/ioc.py): `iocs(kind, width, height, rate, start=True)`; all are
    killed at the end."""
    from ioc import Ioc

    started = []

    def make(kind, width=1280, height=960, rate=20.0, start=True):
        ioc = Ioc(kind, "TST", width, height, rate)
        started.append(ioc)
        return ioc.start() if start else ioc

    yield make
    for ioc in started:
        ioc.kill()


@pytest.fixture
def cameras(node, tmp_path):
    """Start camera instances (tests/camera_harness.py): `cameras(config, env=None,
    name="cam")`; all are stopped at the end, and must end with exit code 0."""
    from camera_harness import CameraProcess

    started = []

    def start(config, env=None, name="cam"):
        camera = CameraProcess(node, f"{name}{len(started)}", config, tmp_path, env)
        started.append(camera)
        return camera

    yield start
    for camera in started:
        assert camera.stop() == 0, camera.log[-10:]
