"""Thousands of mutated bsread messages must never take the decoding process down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = Path(__file__).resolve().parent / "bsread_fuzz_child.py"
COUNT = 20000  # ~8 s of CPU here


def test_decoder_survives_mutated_messages(golden_dir):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, str(CHILD), str(golden_dir), "20240611", str(COUNT)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, (
        f"the fuzzed decoder process died ({result.returncode}): {result.stderr[-3000:]}"
    )
    counts = json.loads(result.stdout)
    assert counts["unexpected"] == 0, "\n".join(counts["tracebacks"])
    assert counts["messages"] == counts["decoded"] + counts["rejected"] == COUNT
    # The mutations bite, and the decoder still recovers values where it can.
    assert counts["rejected"] > COUNT // 10 and counts["decoded"] > COUNT // 10
    assert counts["channel_errors"] > COUNT // 10
    for mutation, outcomes in counts["outcomes"].items():
        assert outcomes.get("rejected", 0) + outcomes.get("channel_error", 0) > 100, (
            mutation,
            outcomes,
        )
