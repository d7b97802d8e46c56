"""Resolve a pipeline's `function`: a built-in name, or a user script in the data directory.

A user script is `<data_dir>/scripts/<name>` (or `<name>.py`) defining `process_image`; it is
imported in the pipeline's own process, so a broken script can only break that pipeline.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
from pathlib import Path

# Built-in functions by name, imported only by the pipelines that use them (the supervisor
# checks names without importing numba kernels).
BUILTIN = {"standard": "shmcam.processing.standard", "minimal": "shmcam.processing.minimal"}
DEFAULT = "standard"     # CamServer's default


def resolve(name: str | None, scripts_dir: Path, entry: str = "process_image"):
    """The callable for a config's `function` (None means the default): a script's `entry`,
    which is process_image for image pipelines, process or generate for stream and custom
    pipelines (built-ins are image functions)."""
    name = name or DEFAULT
    if name in BUILTIN:
        return importlib.import_module(BUILTIN[name]).process_image
    for candidate in (scripts_dir / name, scripts_dir / f"{name}.py"):
        if candidate.is_file() and candidate.parent == scripts_dir:
            return _load(candidate, entry)
    raise ValueError(f"function {name!r} is neither built in ({', '.join(BUILTIN)}) "
                     f"nor an uploaded script in {scripts_dir}")


def _load(path: Path, entry: str):
    # Uploaded scripts need not end in .py: name the loader explicitly.
    loader = importlib.machinery.SourceFileLoader(f"shmcam_user_{path.stem}", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function = getattr(module, entry, None)
    if not callable(function):
        raise ValueError(f"script {path.name} defines no {entry} function")
    return function
