"""Where a FILE mode pipeline writes: `file` names that cannot leave the node's directories.

The rule lives here, free of h5py and of the worker, so that the supervisor's config validation
and the instance apply the same one. A name is either relative, a file in the node's store
directory (`<data_dir>/store`), or absolute, a file inside one of the node's `file_dirs` (so
that CamServer configs naming their facility's data paths run once the node allows those).
Either way the part under the directory is a path of plain components that ends in `.h5` or
`.hdf5`, and may contain the placeholders `{instance_id}` and `{time}` (the run's start, UTC
`YYYYmmdd_HHMMSS_ffffff`). An existing file is never overwritten: a name without `{time}` can be
used by one run only.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path, PurePosixPath

PLACEHOLDERS = ("instance_id", "time")
RULE = (
    "a relative path (in the node's store) or an absolute one inside the node's file_dirs, "
    "of up to 8 components of A-Z a-z 0-9 . _ : + - (none starting with a dot) ending in "
    ".h5 or .hdf5; placeholders {instance_id} and {time} allowed"
)
_COMPONENT = re.compile(r"[A-Za-z0-9_:+-][A-Za-z0-9._:+-]{0,127}")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_SAMPLE = {"instance_id": "i", "time": "20000101_000000_000000"}


def check_file(name: object, file_dirs=()) -> str:
    """The name if it follows the rule, else ValueError saying what is wrong."""
    if not isinstance(name, str):
        raise ValueError(f"file must be a string, not {type(name).__name__}: use {RULE}")
    unknown = [key for key in _PLACEHOLDER.findall(name) if key not in PLACEHOLDERS]
    if unknown:
        raise ValueError(f"file {name!r}: unknown placeholder {{{unknown[0]}}}; use {RULE}")
    _split(_PLACEHOLDER.sub(lambda m: _SAMPLE[m.group(1)], name), name, file_dirs)
    return name


def run_path(
    store_dir: str | Path, name: str, instance_id: str, start: datetime, file_dirs=()
) -> Path:
    """The file of a run started at `start` (UTC): inside the store or a file_dir, else
    ValueError."""
    check_file(name, file_dirs)
    filled = _PLACEHOLDER.sub(
        lambda m: {"instance_id": instance_id, "time": start.strftime("%Y%m%d_%H%M%S_%f")}[
            m.group(1)
        ],
        name,
    )
    root, relative = _split(filled, name, file_dirs)  # the instance id is in now: check again
    root = Path(store_dir if root is None else root).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):  # a symbolic link inside pointing out
        raise ValueError(f"file {name!r} leads out of {root}")
    return path


def _split(filled: str, name: str, file_dirs) -> tuple[Path | None, str]:
    """(the directory, None for the store; the path under it), checked."""
    root, relative = None, filled
    if filled.startswith("/"):
        root = next(
            (Path(d) for d in file_dirs if PurePosixPath(filled).is_relative_to(PurePosixPath(d))),
            None,
        )
        if root is None:
            allowed = ", ".join(map(str, file_dirs)) or "none"
            raise ValueError(
                f"file {name!r} is not inside the node's file_dirs ({allowed}); give a name "
                f"in the node's store, or ask for the directory in the node's file_dirs"
            )
        relative = str(PurePosixPath(filled).relative_to(PurePosixPath(root)))
    parts = relative.split("/")
    if (
        len(relative) > 1024
        or len(parts) > 8
        or not all(map(_COMPONENT.fullmatch, parts))
        or not relative.endswith((".h5", ".hdf5"))
    ):
        raise ValueError(f"invalid file {name!r}: use {RULE}")
    return root, relative
