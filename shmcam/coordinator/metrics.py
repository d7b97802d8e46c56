"""The coordinator's /metrics: every node's series in one page (each already carries its
`node` label), families merged so that each has one HELP and TYPE, plus the nodes' up state."""

from __future__ import annotations

import re

_FAMILY = re.compile(r"# (?:HELP|TYPE) (\S+)")


def merge(pages: list[str], nodes: dict[str, dict]) -> str:
    families: dict[str, list[str]] = {}
    heads: dict[str, list[str]] = {}
    for page in pages:
        family = None
        for line in page.splitlines():
            if not line:
                continue
            match = _FAMILY.match(line)
            if match:
                family = match[1]
                known = heads.setdefault(family, [])
                if line not in known:
                    known.append(line)
                families.setdefault(family, [])
            elif family is not None:
                families[family].append(line)
    lines = [
        "# HELP shmcam_node_up Whether the coordinator reaches the node (1) or not (0).",
        "# TYPE shmcam_node_up gauge",
        *(f'shmcam_node_up{{node="{name}"}} {int(n["up"])}' for name, n in nodes.items()),
    ]
    for family, samples in families.items():
        lines += heads[family] + samples
    return "\n".join(lines) + "\n"
