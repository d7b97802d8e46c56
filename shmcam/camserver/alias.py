"""`import cam_server...` inside instances: the same module objects as `shmcam.camserver...`.

A finder first in `sys.meta_path` answers for `cam_server` and its submodules, but it is
installed only when no real CamServer package is importable, which then always wins. It must
come first: the aliased packages share their `__path__` with shmcam's, where the path finder
would otherwise load a second copy of each submodule. The alias is one module object under two
names: a user script's `functions` is `shmcam.camserver.pipeline.data_processing.functions`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

ALIAS = "cam_server"
TARGET = "shmcam.camserver"


class _Loader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        """Already executed under its own name."""


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != ALIAS and not fullname.startswith(ALIAS + "."):
            return None
        real = TARGET + fullname[len(ALIAS) :]
        try:
            found = importlib.util.find_spec(real)
        except ModuleNotFoundError:
            return None
        if found is None:
            return None
        return importlib.util.spec_from_loader(
            fullname, _Loader(real), is_package=found.submodule_search_locations is not None
        )


def install() -> None:
    """Make `cam_server.*` importable in this process, unless CamServer itself is installed
    (idempotent)."""
    if any(isinstance(finder, _Finder) for finder in sys.meta_path):
        return
    if importlib.util.find_spec(ALIAS) is None:
        sys.meta_path.insert(0, _Finder())
