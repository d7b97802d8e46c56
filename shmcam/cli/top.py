"""`shmcam top`: a live view of a node's instances, refreshed every second, like `top`; given
a coordinator's URL, of the whole cluster (a line per node, and a NODE column).

Reads the REST API (the same statistics the web page and /metrics show), so it works from any
machine that can reach the node or the coordinator. Keys: q quits; c, f, d, e, n sort by CPU,
frame rate, drops, errors or name. `--once` prints one table, `--json` one JSON document.

Columns: K kind (camera, pipeline), S state (R running, S starting), CPU% of one core, MEM in
MB, frames in and out per second, DROP/TORN/ERR counts, P50/P99 processing ms, CL clients,
FILL how much of its camera's ring a pipeline has still to read (100%: frames drop), PID.
"""

from __future__ import annotations

import argparse
import curses
import json
import shutil
import sys
import time
import urllib.error
import urllib.request

from shmcam.supervisor import settings as node_settings

COLUMNS = (  # header, width, row key, format; the name takes what the terminal has left
    ("K", 1, "kind", "{:.1}"),
    ("S", 1, "state", "{:.1}"),
    ("CPU%", 4, "cpu", "{:4.0f}"),
    ("MEM", 4, "memory_mb", "{:4.0f}"),
    ("IN/s", 5, "fps_in", "{:5.1f}"),
    ("OUT/s", 5, "fps_out", "{:5.1f}"),
    ("DROP", 5, "dropped", "{:5d}"),
    ("TORN", 4, "torn", "{:4d}"),
    ("ERR", 4, "errors", "{:4d}"),
    ("P50", 4, "p50", "{:4.1f}"),
    ("P99", 4, "p99", "{:4.1f}"),
    ("CL", 2, "clients", "{:2d}"),
    ("FILL", 4, "ring_fill", "{:4.0%}"),
    ("PID", 7, "pid", "{:7d}"),
)
NAME_WIDTH = 11  # at least; 80 columns leave 79 for a line, so that it never wraps
NAME_WIDTH_MAX = 32
NODE_WIDTH_MAX = 12
STATE_LETTERS = {"running": "R", "starting": "S", "ended": "E", "failed": "F"}
SORT_KEYS = {"c": "cpu", "f": "fps_out", "d": "dropped", "e": "errors", "n": "name"}


def add_parser(commands) -> None:
    p = commands.add_parser(
        "top",
        help="live view of a node's or the cluster's instances",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "url", nargs="?", help="supervisor or coordinator URL (default: from the node config)"
    )
    p.add_argument(
        "--config",
        default=str(node_settings.DEFAULT_CONFIG),
        help="node config used to find the local supervisor",
    )
    p.add_argument("--once", action="store_true", help="print one table and exit")
    p.add_argument("--json", action="store_true", help="print one JSON document and exit")
    p.add_argument("--interval", type=float, default=1.0, help="refresh period in seconds")
    p.set_defaults(run=run)


class Unreachable(Exception):
    pass


def default_url(config: str) -> str:
    try:
        settings = node_settings.load(config)
    except node_settings.SettingsError as error:
        raise SystemExit(f"shmcam top: {error}") from None
    host = "localhost" if settings.rest_host in ("0.0.0.0", "::") else settings.rest_host
    return f"http://{host}:{settings.rest_port}"


def _get(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise Unreachable(f"cannot reach the supervisor at {url}: {reason}") from None


def snapshot(url: str) -> dict:
    """Node totals (CPU and memory percent, network bytes/s) and one row per instance, from
    the cam and pipeline info endpoints."""
    rows, totals, nodes = [], {}, None
    for kind, root in (("camera", "cam"), ("pipeline", "pipeline")):
        info = _get(f"{url}/api/v1/{root}/info")["info"]
        nodes = info.get("nodes")  # a coordinator's: the cluster's nodes
        totals = {
            "cpu": info["cpu"],
            "memory": info["memory_percent"],
            "rx_bytes_per_s": info["rx"],
            "tx_bytes_per_s": info["tx"],
        }
        for name, instance in info["active_instances"].items():
            s = instance["statistics"]
            rows.append(
                {
                    "name": name,
                    "node": instance.get("node"),
                    "kind": kind,
                    "state": instance.get("state", "running"),
                    "pid": s["pid"] or 0,
                    "cpu": s["cpu"] or 0.0,
                    "memory_mb": (s["memory"] or 0) / 2**20,
                    "fps_in": s["fps_in"],
                    "fps_out": s["fps_out"],
                    "dropped": s["dropped"],
                    "torn": s["torn"],
                    "errors": s["errors"],
                    "p50": s["processing_ms_p50"] or 0.0,
                    "p99": s["processing_ms_p99"] or 0.0,
                    "clients": s.get("stream_clients", s["clients"]),
                    "lag": s["lag"],
                    "ring_fill": s.get("ring_fill"),
                    "stream": instance["stream_address"],
                }
            )
    data = {"url": url, "node": totals, "instances": rows}
    if nodes is not None:
        data["nodes"] = nodes
    return data


def _rate(node: dict, key: str) -> str:
    value = node.get(f"{key}_bytes_per_s")
    if value is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}/s" if unit == "B" else f"{value:.1f} {unit}/s"
        value /= 1000


def _node_line(name: str, node: dict) -> str:
    if not node["up"]:
        return f"  {name}: down ({node.get('error') or 'no answer'})"
    return (
        f"  {name}: CPU {node.get('cpu', 0):.0f}% mem {node.get('memory_percent', 0):.0f}% "
        f"net in {_rate({'v_bytes_per_s': node.get('rx')}, 'v')} "
        f"out {_rate({'v_bytes_per_s': node.get('tx')}, 'v')}"
    )


def _cell(row: dict, key: str, width: int, fmt: str) -> str:
    value = row[key]
    if value is None:
        return "-".rjust(width)
    if key == "state":
        value = STATE_LETTERS.get(value, "?")
    return fmt.format(value)


def table(data: dict, sort: str = "name", columns: int = 80) -> list[str]:
    """The view as lines of at most `columns` - 1 characters, the name as wide as fits."""
    node = data["node"]
    columns_shown = COLUMNS
    if "nodes" in data:  # the cluster: a node column after the name
        width = max([4, *(len(n) for n in data["nodes"])][:NODE_WIDTH_MAX])
        width = min(width, NODE_WIDTH_MAX)
        columns_shown = (("NODE", width, "node", f"{{:<{width}.{width}}}"), *COLUMNS)
    fixed = sum(width + 1 for _, width, _, _ in columns_shown)
    name = min(NAME_WIDTH_MAX, max(NAME_WIDTH, columns - 1 - fixed))
    width = max(columns - 1, fixed + name)
    lines = [
        (
            f"{data['url'].split('://')[-1]}  CPU {node['cpu']:.0f}% mem "
            f"{node['memory']:.0f}% net in {_rate(node, 'rx')} out {_rate(node, 'tx')}  "
            f"{len(data['instances'])} instances"
        )[:width]
    ]
    if "nodes" in data:
        up = [n for n, s in data["nodes"].items() if s["up"]]
        lines[0] = (
            f"cluster {data['url'].split('://')[-1]}: {len(up)} of {len(data['nodes'])} nodes "
            f"up, {len(data['instances'])} instances"
        )[:width]
        lines += [_node_line(n, s)[:width] for n, s in sorted(data["nodes"].items())]
    lines.append(
        " ".join(
            [
                f"{'NAME':<{name}}",
                *(
                    f"{h:<{w}}" if w < 2 or h == "NODE" else f"{h:>{w}}"
                    for h, w, _, _ in columns_shown
                ),
            ]
        )
    )
    rows = sorted(data["instances"], key=lambda r: r[sort], reverse=sort != "name")
    for row in rows:
        lines.append(
            " ".join(
                [
                    f"{row['name']:<{name}.{name}}",
                    *(_cell(row, key, w, fmt) for _, w, key, fmt in columns_shown),
                ]
            )
        )
    return lines


def run(args) -> int:
    url = (args.url or default_url(args.config)).rstrip("/")
    try:
        if args.json or args.once:
            data = snapshot(url)
            print(
                json.dumps(data)
                if args.json
                else "\n".join(table(data, columns=shutil.get_terminal_size().columns))
            )
        else:
            curses.wrapper(live, url, args.interval)
    except Unreachable as error:
        print(f"shmcam top: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def live(screen, url: str, interval: float) -> None:
    curses.curs_set(0)
    screen.timeout(100)
    sort, message, next_refresh, lines, data = "name", "", 0.0, [], None
    while True:
        key = screen.getch()
        if key in (ord("q"), ord("Q"), 27):
            return
        if 0 <= key < 256 and chr(key) in SORT_KEYS:
            sort, next_refresh = SORT_KEYS[chr(key)], 0.0
        if time.monotonic() >= next_refresh:
            next_refresh = time.monotonic() + interval
            height, width = screen.getmaxyx()
            try:
                data = snapshot(url)
                lines, message = table(data, sort, width), ""
            except Unreachable as error:
                message, data = str(error), None
            screen.erase()
            for y, line in enumerate(lines[: height - 1]):
                screen.addnstr(y, 0, line, width - 1, curses.A_REVERSE if y == 1 else 0)
            footer = (
                message or f"sorted by {sort} | q quit, c cpu, f fps, d drops, e errors, n name"
            )
            screen.addnstr(height - 1, 0, footer, width - 1, curses.A_BOLD)
            screen.refresh()
