"""C user functions: an uploaded `.c` source built on the node into a CPython extension.

Two forms of source, told apart by whether it includes CamServer's `module.c`:
- shmcam's: the scientist writes only `process_image` (signature in PROTOTYPE, see
  docs/user-functions.md); this module puts it into one translation unit between a header
  (Python, numpy's C API, the prototype, so a wrong signature is a compile error) and a
  generated module init whose `process_image` has the Python signature of every user function;
- CamServer's: the source starts with `#include "module.c"` and defines
  `PyObject *process(PyObject *self, PyObject *args)`, which parses CamServer's argument
  tuples itself; shmcam's own MODULE_C (not CamServer's) defines the module, its method table
  and the `moduleErr` exception around it, with numpy's older API such sources use.

gcc runs with sysconfig's flags in its own process group under a timeout. No user code runs
until a pipeline imports the module: a build is checked by reading its dynamic symbols (every
symbol it needs must be exported by the interpreter, the libraries the interpreter loads, or
those the module names itself: what the dynamic loader resolves at import), never by loading
it, so that a constructor or module init cannot run at upload. The compiler's messages are
cut down to those located in the user's file and in shmcam's generated code, without quoted
source lines: a source cannot make the compiler show other files (`#include "/etc/shadow"`,
`#line 1 "/etc/shadow"`, an assembler `.include`). The cache key is the source, the headers
it may include, the flags and the Python/numpy ABI: pipelines of the same source share one
build, and an edited source is a new module (a reload loads it).
"""

from __future__ import annotations

import faulthandler
import functools
import hashlib
import importlib.util
import logging
import os
import re
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

TIMEOUT = 30.0  # seconds for gcc, and again for reading the built module's symbols
MESSAGE_LINES = 20  # of the compiler's output, in errors
# Mistakes that compile with a warning in C but crash at run time: errors here.
STRICT = (
    "-Werror=implicit-function-declaration",
    "-Werror=return-type",
    "-Werror=incompatible-pointer-types",
    "-Werror=int-conversion",
)
# Messages without quoted source lines: a #line directive can name any file, whose lines the
# compiler would otherwise print.
DIAGNOSTICS = ("-fdiagnostics-color=never", "-fno-diagnostics-show-caret")

PROTOTYPE = """\
PyObject *process_image(PyArrayObject *image, uint64_t pulse_id, double timestamp,
                        PyArrayObject *x_axis, PyArrayObject *y_axis,
                        PyObject *parameters, PyObject *bsdata)"""

HEADER_NAME, WRAPPER_NAME, MODULE_C_NAME = "<shmcam header>", "<shmcam wrapper>", "module.c"

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

# CamServer's form: the user's source includes this first. SHMCAM_MODULE and SHMCAM_INIT are
# defined before the source (the module's name is the build's).
CAMSERVER_FORM = re.compile(rb'^[ \t]*#[ \t]*include[ \t]*"module\.c"', re.M)
CAMSERVER_ENTRY = "process"
MODULE_C = """\
#line 1 "module.c"
/* shmcam's module definition for C user functions written for CamServer's loader: the
   source includes this file, then defines process(). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <numpy/arrayobject.h>

/* Hidden: a source without process() fails to link instead of failing to load. */
__attribute__((visibility("hidden"))) PyObject *process(PyObject *self, PyObject *args);

/* The exception type of the module, for PyErr_SetString(moduleErr, "..."). */
static PyObject *moduleErr;

static PyMethodDef shmcam_methods[] = {
    {"process", process, METH_VARARGS, "a user function in CamServer's form"},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef shmcam_module = {
    PyModuleDef_HEAD_INIT, SHMCAM_MODULE, "C user function in CamServer's form", -1,
    shmcam_methods
};

PyMODINIT_FUNC SHMCAM_INIT(void)
{
    PyObject *module;
    import_array();
    module = PyModule_Create(&shmcam_module);
    if (module == NULL)
        return NULL;
    moduleErr = PyErr_NewException(SHMCAM_MODULE ".error", NULL, NULL);
    if (moduleErr == NULL || PyModule_AddObjectRef(module, "error", moduleErr) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
"""
# Sources for numpy 2 in CamServer's form read array fields directly (image->descr->elsize),
# which numpy 2's headers allow only when targeting numpy 2.
NUMPY_2 = int(np.__version__.split(".")[0]) >= 2
CAMSERVER_FLAGS = ("-DNPY_TARGET_VERSION=NPY_2_0_API_VERSION",) if NUMPY_2 else ()
LOCATED = re.compile(r"(\d+:){1,2} (fatal error|error|warning|note): |\s(In function|At top level)")
LINKER = re.compile(r"(undefined reference to|multiple definition of) `([^']+)'")


class CompileError(ValueError):
    """A C source that does not build into a user function; the message says why."""


def is_camserver_form(source: bytes) -> bool:
    """Whether a C source is written for CamServer's loader (it includes "module.c")."""
    return CAMSERVER_FORM.search(source) is not None


def load(path: Path, cache: Path, headers: Path | None = None):
    """The extension module built from the C source at path (from the cache if built
    before): its `process_image` (shmcam's form) or `process` (CamServer's form) is the user
    function. A crash in C code kills the process: faulthandler leaves its Python stack on
    stderr (the instance log), so the log says where it died."""
    return load_extension(build(path.read_bytes(), path.name, cache, headers))


def load_extension(path: Path):
    """Import an extension module file (a build, or a prebuilt `<name>[.<tag>].so`)."""
    faulthandler.enable()
    spec = importlib.util.spec_from_file_location(_module_name(path), path)
    extension = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extension)
    return extension


def build(
    source: bytes, name: str, cache: Path, headers: Path | None = None, timeout: float = TIMEOUT
) -> Path:
    """The extension module built from source (named `name` in messages), from the cache if
    it was built before. `headers` is a folder the source may #include from (the libs).
    CompileError if it does not compile or link, or needs symbols nothing provides; nothing
    is cached then."""
    camserver = is_camserver_form(source)
    flags = _flags(headers, camserver)
    key = _key(source, flags, headers)
    module = f"shmcam_c_{key[:24]}"
    target = cache / f"{module}{sysconfig.get_config_var('EXT_SUFFIX')}"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    shown = _shown(name)
    try:
        unit = work / "unit.c"
        if camserver:
            (work / MODULE_C_NAME).write_text(MODULE_C)
        unit.write_bytes(_unit(source, shown, module, camserver))
        built = work / target.name
        _check_includes(flags, unit, headers, name, source, timeout)
        output = _run([*flags, str(unit), "-o", str(built)], timeout, work)
        if output.returncode != 0:
            raise CompileError(f"{name} does not compile:\n{_explain(output.text, shown, source)}")
        check_symbols(built, name, source, timeout)
        os.replace(built, target)  # atomic: a concurrent build of the same key is harmless
    except subprocess.TimeoutExpired:
        raise CompileError(f"{name} does not compile: gave up after {timeout:g} s") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("built %s from %s", target, name)
    return target


def _check_includes(
    flags: list[str], unit: Path, headers: Path | None, name: str, source: bytes, timeout: float
) -> None:
    """CompileError if the source includes a file from outside the header folders (the
    compiler's, Python's, numpy's, the libs), found by preprocessing alone: the compile
    would turn that file's words into messages about the user's lines."""
    work = unit.parent
    output = _run([*flags, "-M", "-MF", "unit.d", str(unit)], timeout, work)
    if output.returncode != 0:
        raise CompileError(
            f"{name} does not compile:\n{_explain(output.text, _shown(name), source)}"
        )
    allowed = [work, *_header_folders(headers)]
    for dependency in _dependencies((work / "unit.d").read_text()):
        path = (work / dependency).resolve()
        if not any(path.is_relative_to(folder) for folder in allowed):
            raise CompileError(
                f"{name} includes {path}, which is outside the folders a user function "
                f"may include from: the C library's, Python's and numpy's headers, and the "
                f"node's libs folder"
            )


def _dependencies(rule: str) -> list[str]:
    """The files of a make rule written by gcc -M (backslash-escaped spaces kept)."""
    text = rule.replace("\\\n", " ").split(":", 1)[1]
    return [part.replace("\\ ", " ") for part in re.split(r"(?<!\\)\s+", text) if part]


def _header_folders(headers: Path | None) -> list[Path]:
    paths = sysconfig.get_paths()
    folders = [paths["include"], paths["platinclude"], np.get_include(), *_compiler_folders()]
    if headers is not None:
        folders.append(str(headers))
    return [Path(folder).resolve() for folder in folders]


@functools.cache
def _compiler_folders() -> tuple[str, ...]:
    """The compiler's own include search list (its and the C library's headers)."""
    compiler = shlex.split(sysconfig.get_config_var("LDSHARED"))[0]
    listing = subprocess.run(
        [compiler, "-E", "-v", "-x", "c", os.devnull, "-o", os.devnull],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=dict(os.environ, LC_ALL="C"),
    ).stderr
    found = re.search(
        r"#include <\.\.\.> search starts here:\n(.*?)\nEnd of search list", listing, re.S
    )
    return tuple(line.strip() for line in found.group(1).splitlines()) if found else ()


def check_extension(data: bytes, name: str, timeout: float = TIMEOUT) -> None:
    """Refuse a prebuilt extension module (`<name>[.<tag>].so`) that this node's Python could
    not import, without loading it: CompileError saying why."""
    if not data.startswith(b"\x7fELF"):
        raise CompileError(f"{name} is not a shared library (ELF file)")
    work = Path(tempfile.mkdtemp(prefix=".check-"))
    try:
        path = work / name
        path.write_bytes(data)
        check_symbols(path, name, b"", timeout)
    except subprocess.TimeoutExpired:
        raise CompileError(f"{name}: reading its symbols took over {timeout:g} s") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_symbols(path: Path, name: str, source: bytes, timeout: float = TIMEOUT) -> None:
    """CompileError unless the module at path exports its init function and every symbol it
    needs is exported by the interpreter's libraries or by those it names (NEEDED). Symbols
    are named in the message only if the source names them: a build may hold code from
    other files (an assembler .include), whose words must not come back."""
    init = f"PyInit_{_module_name(path)}"
    defined, undefined, needed = _symbols(path, timeout)
    if init not in defined:
        raise CompileError(
            f"{name} is not a Python extension module: it exports no {init} function"
        )
    available = set(_interpreter_exports())
    for library in needed:
        available |= _library_exports(library)
    missing = sorted(undefined - available)
    if not missing:
        return
    words = _identifiers(source)
    named = [symbol for symbol in missing if symbol in words]
    others = len(missing) - len(named)
    parts = [f"undefined symbol: {symbol}" for symbol in named]
    if others:
        parts.append(f"{others} undefined symbol(s) that the source does not name")
    raise CompileError(
        f"{name} compiled but does not load: {'; '.join(parts)} (declared but defined "
        f"nowhere: neither in the source nor in Python, numpy or the C library)"
    )


def _module_name(path: Path) -> str:
    return path.name.split(".", 1)[0]


def _shown(name: str) -> str:
    """The file name as #line gives it to the compiler's messages."""
    return name.replace("\\", "_").replace('"', "_")


def _unit(source: bytes, shown: str, module: str, camserver: bool) -> bytes:
    """The translation unit; #line makes the compiler's messages name the user's file."""
    if not source.endswith(b"\n"):
        source += b"\n"
    if camserver:
        return (
            f'#define SHMCAM_MODULE "{module}"\n#define SHMCAM_INIT PyInit_{module}\n'
            f'#line 1 "{shown}"\n'.encode()
            + source
        )
    return (
        HEADER.encode()
        + f'#line 1 "{shown}"\n'.encode()
        + source
        + WRAPPER.substitute(module=module, source=shown).encode()
    )


def _flags(headers: Path | None, camserver: bool) -> list[str]:
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
        *DIAGNOSTICS,
        *STRICT,
        *(CAMSERVER_FLAGS if camserver else ()),
        *(f"-I{include}" for include in includes),
    ]


def _key(source: bytes, flags: list[str], headers: Path | None) -> str:
    """Content hash of everything the built module depends on."""
    digest = hashlib.sha256()
    for part in (
        source,
        HEADER,
        WRAPPER.template,
        MODULE_C,
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


class _Output:
    def __init__(self, returncode: int, text: str):
        self.returncode, self.text = returncode, text


def _run(command: list[str], timeout: float, cwd: Path) -> _Output:
    """A build step in its own process group (its children die with it on timeout), its
    output without the build folder's path; TimeoutExpired after timeout."""
    try:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=dict(os.environ, LC_ALL="C", TMPDIR=str(cwd)),
            start_new_session=True,
        )
    except OSError as error:
        raise CompileError(f"cannot run {command[0]} on this node: {error}") from None
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return _Output(process.returncode, output.replace(f"{cwd}{os.sep}", ""))


def _explain(output: str, shown: str, source: bytes) -> str:
    """What the compiler said about the user's file and shmcam's generated code (the first
    lines), or what it means where it is obscure; nothing located in other files."""
    lines = _own_lines(output, (shown, HEADER_NAME, WRAPPER_NAME, MODULE_C_NAME), source)
    for function in ("process_image", CAMSERVER_ENTRY):
        if f"undefined reference to `{function}'" in lines:
            return _missing_entry(shown, function)
    generated = tuple(f"{file}:" for file in (HEADER_NAME, WRAPPER_NAME, MODULE_C_NAME))
    if all(line.startswith(generated) for line in lines):  # consequences of other errors
        return (
            f"no message is located in {shown}: the error is in another file (an include, "
            f"a #line directive) or in assembler code, whose messages are not shown"
        )
    return "\n".join(lines[:MESSAGE_LINES])


def _own_lines(output: str, files: tuple[str, ...], source: bytes) -> list[str]:
    """The compiler's lines located in files, and linker complaints about symbols the
    source names."""
    words = _identifiers(source) | {"process_image", CAMSERVER_ENTRY}
    kept = []
    for line in output.splitlines():
        for file in files:
            if line.startswith(f"{file}:") and LOCATED.match(line[len(file) + 1 :]):
                kept.append(line)
                break
        else:
            found = LINKER.search(line)
            if found and found.group(2) in words:
                kept.append(found.group(0))
    return kept


def _missing_entry(shown: str, function: str) -> str:
    if function == CAMSERVER_ENTRY:
        return (
            f'{shown} includes "module.c" (CamServer\'s form) but defines no process '
            f"function; define\nPyObject *process(PyObject *self, PyObject *args)\n"
            f"(see docs/user-functions.md)"
        )
    return (
        f"{shown} defines no process_image function; define\n{PROTOTYPE}\n"
        f"(see docs/user-functions.md)"
    )


def _identifiers(source: bytes) -> set[str]:
    return set(re.findall(r"[A-Za-z_]\w*", source.decode("utf-8", "replace")))


def _symbols(path: Path, timeout: float) -> tuple[set[str], set[str], list[str]]:
    """(defined, undefined strong, NEEDED libraries) of a shared object's dynamic section,
    read by binutils (parsers: nothing of the file runs)."""
    defined, undefined = set(), set()
    listing = _tool(["nm", "-D", str(path)], timeout)
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "U":
            undefined.add(_unversioned(fields[1]))
        elif len(fields) == 3 and fields[1] not in "Uwv":
            defined.add(_unversioned(fields[2]))
    dynamic = _tool(["readelf", "-d", "-W", str(path)], timeout)
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic)
    return defined, undefined, needed


def _tool(command: list[str], timeout: float) -> str:
    output = _run(command, timeout, Path(command[-1]).parent)
    if output.returncode != 0:
        raise CompileError(f"{Path(command[-1]).name} is not a readable shared library")
    return output.text


def _unversioned(symbol: str) -> str:
    return symbol.split("@", 1)[0]


@functools.cache
def _interpreter_exports() -> frozenset[str]:
    """Symbols of the interpreter and the libraries it loads (the global scope extension
    modules resolve against)."""
    exports: set[str] = set()
    for library in _interpreter_libraries().values():
        exports |= _exports(library)
    return frozenset(exports)


@functools.cache
def _interpreter_libraries() -> dict[str, str]:
    """{soname: path} of the interpreter's executable and of what it loads (ldd of our own
    interpreter only: never of user files)."""
    executable = os.path.realpath(sys.executable)
    listing = subprocess.run(
        ["ldd", executable], capture_output=True, text=True, timeout=TIMEOUT, check=False
    ).stdout
    libraries = {os.path.basename(executable): executable}
    for soname, path in re.findall(r"^\s*(\S+) => (/\S+)", listing, re.M):
        libraries[soname] = path
    for path in re.findall(r"^\s*(/\S+) \(0x", listing, re.M):
        libraries[os.path.basename(path)] = path
    return libraries


@functools.cache
def _library_exports(soname: str) -> frozenset[str]:
    """Symbols of a library a module names (NEEDED), found where the loader finds it; none
    if it is not installed (the module's own symbols then stay unresolved)."""
    path = _interpreter_libraries().get(soname) or _system_libraries().get(soname)
    return _exports(path) if path else frozenset()


@functools.cache
def _system_libraries() -> dict[str, str]:
    """{soname: path} of the dynamic loader's cache (ldconfig -p)."""
    listing = subprocess.run(
        ["ldconfig", "-p"], capture_output=True, text=True, timeout=TIMEOUT, check=False
    ).stdout
    found: dict[str, str] = {}
    for soname, path in re.findall(r"^\s*(\S+) \([^)]*\) => (\S+)", listing, re.M):
        found.setdefault(soname, path)  # the first listed: this machine's own
    return found


@functools.cache
def _exports(path: str) -> frozenset[str]:
    listing = subprocess.run(
        ["nm", "-D", "--defined-only", path],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    ).stdout
    rows = [line.split() for line in listing.splitlines()]
    return frozenset(_unversioned(fields[2]) for fields in rows if len(fields) == 3)
