"""`shmcam top` against a real supervisor: table, JSON, unreachable node, live view in a pty."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

import pyte
from supervisor_harness import SIM_CAMERA, wait_for


def top(*args):
    return subprocess.run(
        [sys.executable, "-m", "shmcam.cli.main", "top", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def running_node(supervisor):
    sup = supervisor(cameras={"sim": SIM_CAMERA})
    sup.call(
        "POST",
        "/api/v1/pipeline",
        params={"instance_id": "p1"},
        json={"camera_name": "sim", "no_client_timeout": 0},
    )
    return sup


def test_once_and_json_show_every_instance_with_live_figures(supervisor):
    sup = running_node(supervisor)
    data = wait_for(
        lambda: (
            (d := json.loads(top(sup.url, "--json").stdout))
            and all(r["fps_out"] > 30 for r in d["instances"])
            and d
        ),
        what="frame rates in top --json",
    )
    rows = {r["name"]: r for r in data["instances"]}
    assert rows.keys() == {"sim", "p1"} and rows["p1"]["kind"] == "pipeline"
    assert rows["p1"]["pid"] > 0 and rows["p1"]["dropped"] == 0
    assert {r["state"] for r in rows.values()} == {"running"}
    assert 0 <= rows["p1"]["ring_fill"] <= 1 and rows["sim"]["ring_fill"] is None
    assert data["node"]["rx_bytes_per_s"] >= 0 and data["node"]["tx_bytes_per_s"] >= 0
    out = subprocess.run(
        [sys.executable, "-m", "shmcam.cli.main", "top", sup.url, "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, COLUMNS="80"),
    )
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0].startswith(sup.url.split("://")[1] + "  CPU ") and " net in " in lines[0]
    assert lines[1].split()[:4] == ["NAME", "K", "S", "CPU%"]
    assert {tuple(line.split()[:3]) for line in lines[2:]} == {("sim", "c", "R"), ("p1", "p", "R")}
    assert max(len(line) for line in lines) <= 79  # an 80-column terminal
    camera_row = next(line for line in lines[2:] if line.startswith("sim "))
    assert camera_row.split()[-2] == "-"  # a camera reads no ring


def test_unreachable_node_is_a_clear_message_not_a_traceback():
    out = top("http://127.0.0.1:9", "--once")
    assert out.returncode == 2
    assert "cannot reach the supervisor at http://127.0.0.1:9" in out.stderr
    assert "Traceback" not in out.stderr


def test_live_view_in_a_terminal_sorts_and_quits(supervisor):
    sup = running_node(supervisor)
    pid, fd = pty.fork()
    if pid == 0:  # the child: shmcam top on an 80x24 terminal
        os.execve(
            sys.executable,
            [sys.executable, "-m", "shmcam.cli.main", "top", sup.url],
            dict(os.environ, TERM="xterm", COLUMNS="80", LINES="24"),
        )
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    screen = pyte.Screen(80, 24)  # render what a person on an 80x24 terminal sees
    stream = pyte.ByteStream(screen)

    def shows(text: str, timeout=15.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in screen.display):
            assert time.monotonic() < deadline, f"{text!r} never shown:\n" + "\n".join(
                screen.display
            )
            if select.select([fd], [], [], 0.2)[0]:
                stream.feed(os.read(fd, 65536))
        return screen.display

    try:
        shows("sorted by name")
        lines = shows("p1 ")
        assert lines[1].split()[:4] == ["NAME", "K", "S", "CPU%"]
        assert all(len(line.rstrip()) <= 79 for line in lines)
        os.write(fd, b"c")
        shows("sorted by cpu")
        os.write(fd, b"q")
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
