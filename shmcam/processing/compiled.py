"""C user functions: an uploaded `.c` source built on the node into a CPython extension.

The scientist writes only `process_image` (signature in PROTOTYPE, see docs/user-functions.md);
this module puts it into one translation unit between a header (Python, numpy's C API, the
prototype, so a wrong signature is a compile error) and a generated module init whose
`process_image` has the Python signature of every user function. gcc runs with sysconfig's
flags in its own process group under a timeout; the result is imported once in a separate
interpreter before it is cached, so the cache holds only modules that load. The cache key
is the source, the headers it may include, the flags and the Python/numpy ABI: pipelines of
the same source share one build, and an edited source is a new module (a reload loads it).
"""

from __future__ import annotations

import faulthandler
import hashlib
import importlib.util
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from string import Template

import numpy as np

log = logging.getLogger(__name__)

TIMEOUT = 30.0  # seconds for gcc, and again for the load check
MESSAGE_LINES = 20  # of the compiler's output, in errors
# Mistakes that compile with a warning in C but crash at run time: errors here.
STRICT = (
    "-Werror=implicit-function-declaration",
    "-Werror=return-type",
    "-Werror=incompatible-pointer-types",
    "-Werror=int-conversion",
)

PROTOTYPE = """\
PyObject *process_image(PyArrayObject *image, uint64_t pulse_id, double timestamp,
                        PyArrayObject *x_axis, PyArrayObject *y_axis,
                        PyObject *parameters, PyObject *bsdata)"""

# Hidden: a source without process_image fails to link instead of failing to load.
HEADER = f"""\
#line 1 "<shmcam header>"
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
__attribute__((visibility("hidden")))
{PROTOTYPE};
"""

WRAPPER = Template("""\
#line 1 "<shmcam wrapper>"
static double shmcam_seconds(PyObject *timestamp)
{
    if (PyTuple_Check(timestamp) && PyTuple_GET_SIZE(timestamp) == 2) {
        double seconds = PyFloat_AsDouble(PyTuple_GET_ITEM(timestamp, 0));
        return seconds + PyFloat_AsDouble(PyTuple_GET_ITEM(timestamp, 1)) * 1e-9;
    }
    return PyFloat_AsDouble(timestamp);
}

static PyObject *shmcam_process_image(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"image", "pulse_id", "timestamp", "x_axis", "y_axis",
                            "parameters", "bsdata", NULL};
    PyArrayObject *image, *x_axis, *y_axis;
    unsigned long long pulse_id;
    PyObject *timestamp, *parameters, *bsdata = Py_None, *result;
    double seconds;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!KOO!O!O!|O:process_image", names,
                                     &PyArray_Type, &image, &pulse_id, &timestamp,
                                     &PyArray_Type, &x_axis, &PyArray_Type, &y_axis,
                                     &PyDict_Type, &parameters, &bsdata))
        return NULL;
    seconds = shmcam_seconds(timestamp);
    if (PyErr_Occurred())
        return NULL;
    result = process_image(image, pulse_id, seconds, x_axis, y_axis, parameters, bsdata);
    if (result == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_SystemError,
                        "process_image returned NULL without setting an exception");
    return result;
}

static PyMethodDef shmcam_methods[] = {
    {"process_image", (PyCFunction)(void (*)(void))shmcam_process_image,
     METH_VARARGS | METH_KEYWORDS,
     "process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None)"},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef shmcam_module = {
    PyModuleDef_HEAD_INIT, "$module", "C user function $source", -1, shmcam_methods
};

PyMODINIT_FUNC PyInit_$module(void)
{
    import_array();
    return PyModule_Create(&shmcam_module);
}
""")

# Imports the built module in a fresh interpreter: unresolved symbols and a failing init show
# here, before the module is cached, and never in the process that asked for the build.
LOAD_CHECK = (
    "import importlib.util, sys; "
    "spec = importlib.util.spec_from_file_location(sys.argv[1], sys.argv[2]); "
    "spec.loader.exec_module(importlib.util.module_from_spec(spec))"
)


class CompileError(ValueError):
    """A C source that does not build into a user function; the message says why."""


def load(path: Path, cache: Path, headers: Path | None = None):
    """The process_image callable of the C source at path, built if not in the cache. A
    crash in C code kills the process: faulthandler leaves its Python stack on stderr (the
    instance log), so the log says where it died."""
    faulthandler.enable()
    module = build(path.read_bytes(), path.name, cache, headers)
    spec = importlib.util.spec_from_file_location(_module_name(module), module)
    extension = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extension)
    return extension.process_image


def build(
    source: bytes, name: str, cache: Path, headers: Path | None = None, timeout: float = TIMEOUT
) -> Path:
    """The extension module built from source (named `name` in messages), from the cache if
    it was built before. `headers` is a folder the source may #include from (the libs).
    CompileError if it does not compile, link or load; nothing is cached then."""
    flags = _flags(headers)
    key = _key(source, flags, headers)
    module = f"shmcam_c_{key[:24]}"
    target = cache / f"{module}{sysconfig.get_config_var('EXT_SUFFIX')}"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    try:
        unit = work / "unit.c"
        unit.write_bytes(_unit(source, name, module))
        built = work / target.name
        _run([*flags, str(unit), "-o", str(built)], name, "does not compile", timeout, work)
        _run(
            [sys.executable, "-c", LOAD_CHECK, module, str(built)],
            name,
            "compiled but does not load",
            timeout,
            work,
        )
        os.replace(built, target)  # atomic: a concurrent build of the same key is harmless
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("built %s from %s", target, name)
    return target


def _module_name(path: Path) -> str:
    return path.name.split(".", 1)[0]


def _unit(source: bytes, name: str, module: str) -> bytes:
    """The translation unit; #line makes the compiler's messages name the user's file."""
    if not source.endswith(b"\n"):
        source += b"\n"
    shown = name.replace("\\", "_").replace('"', "_")
    return (
        HEADER.encode()
        + f'#line 1 "{shown}"\n'.encode()
        + source
        + WRAPPER.substitute(module=module, source=shown).encode()
    )


def _flags(headers: Path | None) -> list[str]:
    """gcc as sysconfig builds extensions (LDSHARED compiles and links in one step)."""
    var = sysconfig.get_config_var
    paths = sysconfig.get_paths()
    includes = dict.fromkeys(
        [
            paths["include"],
            paths["platinclude"],
            np.get_include(),
            *([str(headers)] if headers is not None else []),
        ]
    )
    return [
        *shlex.split(var("LDSHARED")),
        *shlex.split(var("CFLAGS") or ""),
        *shlex.split(var("CCSHARED") or ""),
        "-fvisibility=hidden",
        "-fdiagnostics-color=never",
        *STRICT,
        *(f"-I{include}" for include in includes),
    ]


def _key(source: bytes, flags: list[str], headers: Path | None) -> str:
    """Content hash of everything the built module depends on."""
    digest = hashlib.sha256()
    for part in (
        source,
        HEADER,
        WRAPPER.template,
        LOAD_CHECK,
        sys.version,
        sysconfig.get_config_var("EXT_SUFFIX"),
        np.__version__,
        *flags,
    ):
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    if headers is not None and headers.is_dir():
        for header in sorted(headers.glob("*.h")):
            digest.update(header.name.encode() + b"\0" + header.read_bytes() + b"\0")
    return digest.hexdigest()


def _run(command: list[str], name: str, failure: str, timeout: float, cwd: Path) -> None:
    """Run a build step in its own process group (gcc's children die with it on timeout);
    CompileError with the first lines of its output if it fails."""
    try:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=dict(os.environ, LC_ALL="C", TMPDIR=str(cwd)),
            start_new_session=True,
        )
    except OSError as error:
        raise CompileError(f"{name}: cannot run {command[0]} on this node: {error}") from None
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise CompileError(f"{name} {failure}: gave up after {timeout:g} s") from None
    if process.returncode != 0:
        shown = output.replace(f"{cwd}{os.sep}", "")  # the build folder is gone after
        raise CompileError(f"{name} {failure}:\n{_explain(shown, name)}")


def _explain(output: str, name: str) -> str:
    """The first lines of a failed step, or what they mean where they are obscure."""
    lines = [line for line in output.splitlines() if line.strip()]
    if any("undefined reference to `process_image'" in line for line in lines):
        return (
            f"{name} defines no process_image function; define\n{PROTOTYPE}\n"
            f"(see docs/user-functions.md)"
        )
    if lines and lines[-1].startswith("ImportError"):
        return lines[-1]  # the load check's traceback says no more than its last line
    return "\n".join(lines[:MESSAGE_LINES])
