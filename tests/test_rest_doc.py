"""docs/rest.md lists every route of a node and of the coordinator, with the permission and
body limit each declares: the documentation cannot fall behind the code."""

from __future__ import annotations

import re
from pathlib import Path

from route_listing import coordinator_routes, node_routes, rows

DOC = Path(__file__).resolve().parents[1] / "docs" / "rest.md"
ROW = re.compile(r"\| `([^`]+)` \| (\w+) \| (\w+) \| (\w+) \| ([a-z, ]+) \|")


def test_the_route_table_is_the_apps():
    documented = {m.groups() for m in map(ROW.fullmatch, DOC.read_text().splitlines()) if m}
    node, coordinator = rows(node_routes()), rows(coordinator_routes())
    expected = set()
    for row in node | coordinator:
        served = ", ".join(n for n, s in (("node", node), ("coordinator", coordinator)) if row in s)
        expected.add((*row, served))
    assert documented == expected, {
        "missing from the doc": sorted(expected - documented),
        "not in the apps": sorted(documented - expected),
    }
