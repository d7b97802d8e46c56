"""Resolve a pipeline's `function`: a built-in name, user code in the data directory, or a
path in one of the node's function_dirs; adapted to the calling convention of the pipeline
type.

User code lives beside the scripts folder the pipeline is given: `<data_dir>/scripts` holds
user functions, Python (`<name>`, `<name>.py`), C (`<name>.c`, built by compiled.py into
`<data_dir>/cache/c`) or prebuilt extension modules (`<name>.so`, `<name>.<tag>.so`);
`<data_dir>/libs` holds libraries and data files, importable by scripts, #include-able by C
sources, and named to both by the SHMCAM_LIBS environment variable. A name is looked up as
given, then as CamServer does: `<name>.c`, `<name>.so`, `<name>.py`. A name containing `/`
is a path, allowed only inside the node's function_dirs (symlinks resolved).

A module's entry point is the pipeline type's (processing: `process_image`; stream:
`process`; custom: shmcam's `generate(parameters)` generator), else CamServer's `process`
(for custom pipelines `process(parameters, init)` returning `(data, timestamp, pulse_id,
data_size)`, adapted here into a generator). Image functions other than shmcam's own
built-ins run after the standard pre-processing (user.py), as in CamServer. All of it is
loaded in the pipeline's own process, so broken user code can only break that pipeline.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import math
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

PROCESSING, STREAM, CUSTOM = "processing", "stream", "custom"
CAMSERVER = "shmcam.camserver.pipeline.data_processing."


@dataclass(frozen=True)
class Builtin:
    module: str
    kind: str  # the pipeline type it serves
    preprocessed: bool = False  # CamServer's image functions: the standard pre-processing first
    splittable: bool = True  # frames may be shared out among parallel workers (no state)


# Built-in functions by name, imported only by the pipelines that use them (the supervisor
# checks names without importing numba kernels). The CamServer ones keep its names.
BUILTIN = {
    "standard": Builtin("shmcam.processing.standard", PROCESSING),
    "minimal": Builtin("shmcam.processing.minimal", PROCESSING),
    "processor": Builtin(CAMSERVER + "processor", PROCESSING, preprocessed=True),
    "transparent": Builtin(CAMSERVER + "transparent", PROCESSING, preprocessed=True),
    "merge": Builtin(CAMSERVER + "merge", PROCESSING, preprocessed=True),
    "psen": Builtin(CAMSERVER + "psen", PROCESSING, preprocessed=True),
    # psss writes EPICS PVs as it goes: workers would write them out of order
    "psss": Builtin(CAMSERVER + "psss", PROCESSING, preprocessed=True, splittable=False),
    "propagate_stream": Builtin(CAMSERVER + "propagate_stream", STREAM),
    "propagate_stream_with_prefix": Builtin(CAMSERVER + "propagate_stream_with_prefix", STREAM),
    "custom_pipeline": Builtin(CAMSERVER + "custom_pipeline", CUSTOM),
}
DEFAULT = "standard"  # CamServer's default
# Entry points per pipeline type: shmcam's first, then CamServer's.
ENTRIES = {
    PROCESSING: ("process_image", "process"),
    STREAM: ("process",),
    CUSTOM: ("generate", "process"),
}
SUFFIXES = ("", ".c", ".so", ".py")  # the order a function name is looked up in (CamServer's)
# What a user function's module sets to declare that it keeps no state from frame to frame,
# so that parallel workers may share its frames out (docs/parallel.md).
SPLITTABLE = "parallel_safe"
LIBS_ENV = "SHMCAM_LIBS"


def libs_dir(scripts_dir: Path) -> Path:
    return scripts_dir.parent / "libs"


def cache_dir(scripts_dir: Path) -> Path:
    return scripts_dir.parent / "cache" / "c"


def is_path(name: str) -> bool:
    return "/" in name


def script_names(name: str, stored: list[str]) -> list[str]:
    """The stored files a function name can mean, in lookup order: the name itself,
    `<name>.c`, `<name>.so` or `<name>.<tag>.so` (this Python's tag first), `<name>.py`."""
    found = []
    for suffix in SUFFIXES:
        if suffix == ".so":
            tagged = sorted(
                (s for s in stored if s.startswith(f"{name}.") and s.endswith(".so")),
                key=lambda s: s != name + sysconfig.get_config_var("EXT_SUFFIX"),
            )
            found += [s for s in tagged if s not in found]
        elif f"{name}{suffix}" in stored and f"{name}{suffix}" not in found:
            found.append(f"{name}{suffix}")
    return found


def allowed_path(name: str, dirs, key: str = "function", setting: str = "function_dirs") -> Path:
    """The file a path in a config (`function`; an external pipeline's `executable`) names,
    if it lies inside one of the node's folders for them (`setting`: function_dirs,
    executable_dirs; symlinks resolved on both sides); ValueError saying why not."""
    if not os.path.isabs(name):
        raise ValueError(f"{key} {name!r} contains '/' but is not an absolute path")
    resolved = [Path(d).resolve() for d in dirs]
    path = Path(name).resolve()
    if not any(path.is_relative_to(d) for d in resolved):
        allowed = ", ".join(map(str, resolved)) or f"none: the node's {setting} setting is empty"
        raise ValueError(
            f"{key} {name!r} is outside the folders this node runs {key}s from by path ({allowed})"
        )
    if not path.is_file():
        raise ValueError(f"{key} {name!r} is not a file")
    return path


def resolve(name: str | None, scripts_dir: Path, kind: str = PROCESSING, function_dirs=()):
    """The callable for a config's `function` (None means the default), with the calling
    convention of pipeline type kind: processing `f(image, pulse_id, timestamp, x_axis,
    y_axis, parameters, bsdata=None)`, stream `f(data, pulse_id, timestamp, parameters)`,
    custom `f(parameters)` returning an iterable of results. Each call loads user code
    afresh (what `reload` asks for)."""
    name = name or DEFAULT
    builtin = BUILTIN.get(name)
    if builtin is not None:
        if builtin.kind != kind:
            raise ValueError(
                f"function {name!r} is a built-in {builtin.kind} function; a {kind} "
                f"pipeline cannot run it"
            )
        module = importlib.import_module(builtin.module)
        return _adapted(module, name, kind, builtin.preprocessed)
    if is_path(name):
        path = allowed_path(name, function_dirs)
    else:
        stored = [p.name for p in scripts_dir.iterdir()] if scripts_dir.is_dir() else []
        found = script_names(name, stored)
        if not found:
            raise ValueError(
                f"function {name!r} is neither built in ({', '.join(BUILTIN)}) "
                f"nor an uploaded script in {scripts_dir}"
            )
        path = scripts_dir / found[0]
    return _adapted(_load(path, scripts_dir), path.name, kind, True, _takes_raw_arrays(path))


def _adapted(module, name: str, kind: str, preprocessed: bool, contiguous: bool = False):
    """The module's entry point for pipeline type kind, called the way that type calls;
    image functions get the standard pre-processing first if `preprocessed`, and
    C-contiguous arrays if `contiguous`."""
    entry = next((e for e in ENTRIES[kind] if callable(getattr(module, e, None))), None)
    if entry is None:
        raise ValueError(f"{name} defines no {' or '.join(ENTRIES[kind])} function")
    function = getattr(module, entry)
    if kind == CUSTOM:
        return function if entry == "generate" else CamServerCustom(function)
    if kind == STREAM or not preprocessed:
        return function
    from .user import UserFunction  # numba kernels: only in pipelines that need them

    return UserFunction(function, name, contiguous)


def splittable(function) -> bool:
    """Whether the module of a resolved user function declares `parallel_safe = True`."""
    inner = getattr(function, "function", function)  # UserFunction wraps the user's own
    module = sys.modules.get(getattr(inner, "__module__", None) or "")
    owner = getattr(inner, "__self__", None)  # a C function: its module
    declared = getattr(module, SPLITTABLE, None) if module is not None else None
    if declared is None and owner is not None:
        declared = getattr(owner, SPLITTABLE, None)
    return declared is True


def _takes_raw_arrays(path: Path) -> bool:
    """Whether a user function reads arrays' memory as C-contiguous without checking (C in
    CamServer's form, prebuilt extensions): it then gets contiguous copies of views."""
    from . import compiled

    if path.name.endswith(".c"):
        return compiled.is_camserver_form(path.read_bytes())
    return path.name.endswith(".so")


class Stamped(NamedTuple):
    """A custom pipeline's result with the pulse id and timestamp it goes out with (None:
    the pipeline's own)."""

    data: dict | None
    pulse_id: int | None
    timestamp: tuple[int, int] | None


class CamServerCustom:
    """CamServer's custom function `process(parameters, init)` -> `(data, timestamp,
    pulse_id, data_size)` as a generator: init is True on the function's first call only,
    the timestamp (seconds, a float) and pulse id go out with the data (None: the
    pipeline's), empty data is no message. Without max_frame_rate it runs as fast as the
    function returns, as in CamServer (the function paces itself)."""

    default_rate = math.inf

    def __init__(self, function):
        self.function = function
        self.init = True

    def __call__(self, parameters):
        while True:
            data, timestamp, pulse_id, _ = self.function(parameters, self.init)
            self.init = False
            if timestamp is not None:
                seconds = math.floor(timestamp)
                timestamp = (seconds, round((timestamp - seconds) * 1e9))
            yield Stamped(data or None, pulse_id, timestamp)


def _load(path: Path, scripts_dir: Path):
    """The module of a user function file: Python, C (built), or a prebuilt extension."""
    libs = libs_dir(scripts_dir)
    os.environ[LIBS_ENV] = str(libs)
    from . import compiled

    if path.name.endswith(".c"):
        return compiled.load(path, cache_dir(scripts_dir), libs)
    if path.name.endswith(".so"):
        _import_from(libs)
        return compiled.load_extension(path)
    _import_from(libs)
    # Uploaded scripts need not end in .py: name the loader explicitly.
    loader = importlib.machinery.SourceFileLoader(f"shmcam_user_{path.stem}", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # as imported modules are (dataclasses, pickle)
    spec.loader.exec_module(module)
    return module


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
    why. Nothing of it runs: a C source is built (into the cache: its pipelines will not
    build it again), a prebuilt extension's symbols are read, a Python script is compiled
    to bytecode."""
    from . import compiled

    if file_name.endswith(".c"):
        compiled.build(code, file_name, cache_dir(scripts_dir), libs_dir(scripts_dir))
        return
    if file_name.endswith(".so"):
        compiled.check_extension(code, file_name)
        return
    try:
        compile(code, file_name, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as error:  # ValueError: null bytes
        raise ValueError(f"script {file_name} is not valid Python: {error}") from None
