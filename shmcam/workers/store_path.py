"""Where a store run writes: `output_file` names that cannot leave the node's store directory.

The rule lives here, free of h5py and of the worker, so that the supervisor's config validation
and the store instance apply the same one. A name is a relative path of plain components that
ends in `.h5` or `.hdf5`; it may contain the placeholders `{instance_id}` and `{time}` (the run's
start, UTC `YYYYmmdd_HHMMSS_ffffff`). An existing file is never overwritten: a name without
`{time}` can be used by one run only.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

DEFAULT = "{instance_id}/{time}.h5"
PLACEHOLDERS = ("instance_id", "time")
RULE = (
    "a relative path of up to 8 components of A-Z a-z 0-9 . _ : + - (none starting with "
    "a dot) ending in .h5 or .hdf5; placeholders {instance_id} and {time} allowed"
)
_COMPONENT = re.compile(r"[A-Za-z0-9_:+-][A-Za-z0-9._:+-]{0,127}")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_SAMPLE = {"instance_id": "i", "time": "20000101_000000_000000"}


def check_output_file(name: object) -> str:
    """The name if it follows the rule, else ValueError saying what is wrong."""
    if not isinstance(name, str):
        raise ValueError(f"output_file must be a string, not {type(name).__name__}: use {RULE}")
    unknown = [key for key in _PLACEHOLDER.findall(name) if key not in PLACEHOLDERS]
    if unknown:
        raise ValueError(f"output_file {name!r}: unknown placeholder {{{unknown[0]}}}; use {RULE}")
    _check_path(_PLACEHOLDER.sub(lambda m: _SAMPLE[m.group(1)], name), name)
    return name


def run_path(store_dir: str | Path, name: str | None, instance_id: str, start: datetime) -> Path:
    """The file of a run started at `start` (UTC): inside store_dir, else ValueError."""
    name = check_output_file(DEFAULT if name is None else name)
    relative = _PLACEHOLDER.sub(
        lambda m: {"instance_id": instance_id, "time": start.strftime("%Y%m%d_%H%M%S_%f")}[
            m.group(1)
        ],
        name,
    )
    _check_path(relative, name)  # the instance id is filled in now: check it too
    root = Path(store_dir).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):  # a symbolic link inside the store pointing out
        raise ValueError(f"output_file {name!r} leads out of the store directory {root}")
    return path


def _check_path(relative: str, name: str) -> None:
    parts = relative.split("/")
    if (
        len(relative) > 1024
        or len(parts) > 8
        or not all(map(_COMPONENT.fullmatch, parts))
        or not relative.endswith((".h5", ".hdf5"))
    ):
        raise ValueError(f"invalid output_file {name!r}: use {RULE}")
