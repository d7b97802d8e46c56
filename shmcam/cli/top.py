"""`shmcam top`: a live view of a node's instances, refreshed every second, like `top`.

Reads the supervisor's REST API (the same statistics the web page and /metrics show), so it
works from any machine that can reach the node. Keys: q quits; c, f, d, e, n sort by CPU,
frame rate, drops, errors or name. `--once` prints one table, `--json` one JSON document.
"""

from __future__ import annotations

import curses
import json
import sys
import time
import urllib.error
import urllib.request

from shmcam.supervisor import settings as node_settings

COLUMNS = (  # header, width, row key, format
    ("NAME", 16, "name", "{:<16.16}"), ("K", 1, "kind", "{:.1}"), ("CPU%", 5, "cpu", "{:5.1f}"),
    ("MEM", 5, "memory_mb", "{:5.0f}"), ("IN/s", 6, "fps_in", "{:6.1f}"),
    ("OUT/s", 6, "fps_out", "{:6.1f}"), ("DROP", 5, "dropped", "{:5d}"),
    ("TORN", 4, "torn", "{:4d}"), ("ERR", 4, "errors", "{:4d}"), ("P50ms", 5, "p50", "{:5.1f}"),
    ("P99ms", 5, "p99", "{:5.1f}"), ("CL", 2, "clients", "{:2d}"), ("LAG", 3, "lag", "{:3d}"),
    ("PID", 7, "pid", "{:7d}"),
)
SORT_KEYS = {"c": "cpu", "f": "fps_out", "d": "dropped", "e": "errors", "n": "name"}


def add_parser(commands) -> None:
    p = commands.add_parser("top", help="live view of a node's instances", description=__doc__)
    p.add_argument("url", nargs="?", help="supervisor URL (default: from the node config)")
    p.add_argument("--config", default=str(node_settings.DEFAULT_CONFIG),
                   help="node config used to find the local supervisor")
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
    """Node totals and one row per instance, from the cam and pipeline info endpoints."""
    rows, totals = [], {}
    for kind, root in (("camera", "cam"), ("pipeline", "pipeline")):
        info = _get(f"{url}/api/v1/{root}/info")["info"]
        totals = {k: info[k] for k in ("cpu", "memory", "tx", "rx")}
        for name, instance in info["active_instances"].items():
            s = instance["statistics"]
            rows.append({
                "name": name, "kind": kind, "pid": s["pid"] or 0, "cpu": s["cpu"] or 0.0,
                "memory_mb": (s["memory"] or 0) / 2**20, "fps_in": s["fps_in"],
                "fps_out": s["fps_out"], "dropped": s["dropped"], "torn": s["torn"],
                "errors": s["errors"], "p50": s["processing_ms_p50"] or 0.0,
                "p99": s["processing_ms_p99"] or 0.0, "clients": s["clients"], "lag": s["lag"],
                "stream": instance["stream_address"]})
    return {"url": url, "node": totals, "instances": rows}


def table(data: dict, sort: str = "name") -> list[str]:
    node = data["node"]
    lines = [f"shmcam top  {data['url']}  node CPU {node['cpu']:.0f}%  memory {node['memory']:.0f}%"
             f"  instances {len(data['instances'])}",
             " ".join(f"{h:>{w}}" if i > 1 else f"{h:<{w}}"
                      for i, (h, w, _, _) in enumerate(COLUMNS))]
    rows = sorted(data["instances"], key=lambda r: r[sort], reverse=sort != "name")
    for row in rows:
        lines.append(" ".join(fmt.format(row[key]) for _, _, key, fmt in COLUMNS))
    return lines


def run(args) -> int:
    url = (args.url or default_url(args.config)).rstrip("/")
    try:
        if args.json:
            print(json.dumps(snapshot(url)))
        elif args.once:
            print("\n".join(table(snapshot(url))))
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
    sort, message, next_refresh, lines = "name", "", 0.0, []
    while True:
        key = screen.getch()
        if key in (ord("q"), ord("Q"), 27):
            return
        if 0 <= key < 256 and chr(key) in SORT_KEYS:
            sort, next_refresh = SORT_KEYS[chr(key)], 0.0
        if time.monotonic() >= next_refresh:
            next_refresh = time.monotonic() + interval
            try:
                lines, message = table(snapshot(url), sort), ""
            except Unreachable as error:
                message = str(error)
            height, width = screen.getmaxyx()
            screen.erase()
            for y, line in enumerate(lines[:height - 1]):
                screen.addnstr(y, 0, line, width - 1, curses.A_REVERSE if y == 1 else 0)
            footer = message or f"sorted by {sort} | q quit, c cpu, f fps, d drops, e errors, n name"
            screen.addnstr(height - 1, 0, footer, width - 1, curses.A_BOLD)
            screen.refresh()
