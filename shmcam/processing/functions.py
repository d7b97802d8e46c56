"""Resolve a pipeline's `function`: a built-in name, or user code in the data directory.

User code lives beside the scripts folder the pipeline is given: `<data_dir>/scripts` holds
user functions, Python (`<name>`, `<name>.py`) or C (`<name>.c`, built by compiled.py into
`<data_dir>/cache/c`); `<data_dir>/libs` holds libraries and data files, importable by
scripts, #include-able by C sources, and named to both by the SHMCAM_LIBS environment
variable. A name is looked up as given, then with `.py`, then with `.c`. User image
functions run after the standard pre-processing (user.py); C sources are image functions
only. All of it is loaded in the pipeline's own process, so broken user code can only break
that pipeline.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

# Built-in functions by name, imported only by the pipelines that use them (the supervisor
# checks names without importing numba kernels).
BUILTIN = {"standard": "shmcam.processing.standard", "minimal": "shmcam.processing.minimal"}
DEFAULT = "standard"  # CamServer's default
IMAGE_ENTRY = "process_image"
SUFFIXES = ("", ".py", ".c")  # the order a function name is looked up in
LIBS_ENV = "SHMCAM_LIBS"


def libs_dir(scripts_dir: Path) -> Path:
    return scripts_dir.parent / "libs"


def cache_dir(scripts_dir: Path) -> Path:
    return scripts_dir.parent / "cache" / "c"


def script_names(name: str) -> list[str]:
    """The file names a function name can be stored as, in lookup order."""
    return [f"{name}{suffix}" for suffix in SUFFIXES]


def is_c(file_name: str) -> bool:
    return file_name.endswith(".c")


def resolve(name: str | None, scripts_dir: Path, entry: str = IMAGE_ENTRY):
    """The callable for a config's `function` (None means the default): a script's `entry`,
    which is process_image for image pipelines, process or generate for stream and custom
    pipelines (built-ins are image functions). Image functions of scripts run after the
    standard pre-processing. Each call loads user code afresh (what `reload` asks for)."""
    name = name or DEFAULT
    if name in BUILTIN:
        return importlib.import_module(BUILTIN[name]).process_image
    for candidate in map(scripts_dir.joinpath, script_names(name)):
        if candidate.is_file() and candidate.parent == scripts_dir:
            function = _load(candidate, scripts_dir, entry)
            if entry != IMAGE_ENTRY:
                return function  # stream data and generators are not images
            from .user import UserFunction  # numba kernels: only in pipelines that need them

            return UserFunction(function, candidate.name)
    raise ValueError(
        f"function {name!r} is neither built in ({', '.join(BUILTIN)}) "
        f"nor an uploaded script in {scripts_dir}"
    )


def _load(path: Path, scripts_dir: Path, entry: str):
    libs = libs_dir(scripts_dir)
    os.environ[LIBS_ENV] = str(libs)
    if is_c(path.name):
        if entry != IMAGE_ENTRY:
            raise ValueError(
                f"{path.name} is a C user function, which defines "
                f"{IMAGE_ENTRY}; a {entry} function must be a Python script"
            )
        from . import compiled

        return compiled.load(path, cache_dir(scripts_dir), libs)
    _import_from(libs)
    # Uploaded scripts need not end in .py: name the loader explicitly.
    loader = importlib.machinery.SourceFileLoader(f"shmcam_user_{path.stem}", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # as imported modules are (dataclasses, pickle)
    spec.loader.exec_module(module)
    function = getattr(module, entry, None)
    if not callable(function):
        raise ValueError(f"script {path.name} defines no {entry} function")
    return function


def _import_from(libs: Path) -> None:
    """Put libs on the import path (after the installed packages: a lib cannot shadow them),
    and forget the libs imported before, so that a reloaded script imports them afresh."""
    if str(libs) not in sys.path:
        sys.path.append(str(libs))
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if origin and Path(origin).is_relative_to(libs):
            del sys.modules[name]
    importlib.invalidate_caches()  # libs uploaded since the last import are found


def check(file_name: str, code: bytes, scripts_dir: Path) -> None:
    """Refuse an uploaded script that cannot load, before it is stored: ValueError saying
    why. A C source is built (into the cache: its pipelines will not build it again); a
    Python script is compiled to bytecode, not run."""
    if is_c(file_name):
        from . import compiled

        compiled.build(code, file_name, cache_dir(scripts_dir), libs_dir(scripts_dir))
        return
    try:
        compile(code, file_name, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as error:  # ValueError: null bytes
        raise ValueError(f"script {file_name} is not valid Python: {error}") from None
