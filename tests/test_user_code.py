"""User code in pipelines: Python scripts and C sources built with the real gcc, libraries,
reload, and what failures do to a real supervisor and its streams. The C example of
docs/user-functions.md is compiled and checked against its Python twin there."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from supervisor_harness import SIM_CAMERA, Supervisor, receive, wait_for

from shmcam.processing import compiled, functions
from shmcam.processing.standard import StandardProcessing
from shmcam.sources.simulation import beam_frames

DOCS = Path(__file__).resolve().parents[1] / "docs" / "user-functions.md"
CAM = {**SIM_CAMERA, "no_client_timeout": 0}
FRAME = beam_frames(64, 48, "uint16", count=1)[0]
AXES = (np.linspace(-3.0, 3.0, 64, dtype=np.float32), np.arange(48, dtype=np.float32)[::-1])
TIMESTAMP = (1700000000, 250000000)
EXT = sysconfig.get_config_var("EXT_SUFFIX")

ECHO = b"""
def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters):
    try:
        image[0, 0] = 0
        writable = True
    except ValueError:
        writable = False
    return {"image": image, "x_axis": x_axis, "y_axis": y_axis, "writable": writable}
"""
SIGNATURE = (
    "PyObject *process_image(PyArrayObject *image, uint64_t pulse_id, double timestamp,"
    " PyArrayObject *x_axis, PyArrayObject *y_axis, PyObject *parameters,"
    " PyObject *bsdata)"
)
C_NULL = f"{SIGNATURE}\n{{\n    return NULL;\n}}\n".encode()
C_UNDECLARED = f'{SIGNATURE}\n{{\n    return Py_BuildValue("{{s:i}}", "n", foo);\n}}\n'.encode()
# Segfaults (a real invalid access, not a signal) once the data file named by the config's
# crash_marker appears in the libs folder; removes it first, so a restart runs normally.
C_CRASH = f"""#include <stdio.h>
#include <stdlib.h>

{SIGNATURE}
{{
    PyObject *marker = PyDict_GetItemString(parameters, "crash_marker");
    const char *libs = getenv("SHMCAM_LIBS");
    char path[4096];
    if (marker != NULL && PyUnicode_Check(marker) && libs != NULL) {{
        snprintf(path, sizeof path, "%s/%s", libs, PyUnicode_AsUTF8(marker));
        if (remove(path) == 0) {{
            volatile uintptr_t address = 8;
            *(volatile int *)address = 1;
        }}
    }}
    return Py_BuildValue("{{s:K}}", "pulse", (unsigned long long)pulse_id);
}}
""".encode()


def doc_example(language: str, name: str) -> bytes:
    """The code block of docs/user-functions.md whose first line names the file."""
    blocks = re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(), re.S)
    found = [block for block in blocks if name in block.splitlines()[0]]
    assert len(found) == 1, f"no single {name} example in {DOCS}"
    return found[0].encode()


def info(sup, instance_id):
    return sup.call("GET", f"/api/v1/pipeline/instance/{instance_id}/info")["info"]


def scripts_dir(tmp_path, files: dict) -> Path:
    """A data directory's scripts folder holding files (name -> bytes)."""
    scripts = tmp_path / "data" / "scripts"
    scripts.mkdir(parents=True)
    for name, code in files.items():
        (scripts / name).write_bytes(code)
    return scripts


@pytest.fixture
def restore_imports():
    """resolve() puts libs on sys.path, SHMCAM_LIBS into the environment and scripts into
    sys.modules of the pipeline process; here that process is the test's: undo it."""
    path, environment = list(sys.path), dict(os.environ)
    yield
    sys.path[:] = path
    os.environ.clear()
    os.environ.update(environment)
    for name in [name for name in sys.modules if name.startswith("shmcam_user_")]:
        del sys.modules[name]


@contextlib.contextmanager
def node_with_scripts(tmp_path, node, scripts: dict, **kwargs):
    """A supervisor whose data directory holds scripts before it starts (as if copied there
    by hand), for permanent instances that start with it."""
    sup = Supervisor(tmp_path, node, **kwargs)
    folder = sup.data_dir / "scripts"
    folder.mkdir(parents=True)
    for name, code in scripts.items():
        (folder / name).write_bytes(code)
    try:
        yield sup.start()
    finally:
        sup.stop()
    assert not sup.segments(), f"segments left after SIGTERM: {sup.segments()}"


# --- the wrapper: pre-processing, read-only, results ---------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"binning_x": 2, "binning_y": 3, "mirror_x": True},
        {
            "image_region_of_interest": [5, 30, 4, 20],
            "image_threshold": 40,
            "rotation": {"angle": 90, "mode": "ortho"},
        },
        {"image_background_enable": "signed", "mirror_y": True, "image_scale": 0.5},
        {"rotation": 10, "image_offset": 3.0},
    ],
)
def test_a_user_function_gets_the_standard_pre_processing(tmp_path, config, restore_imports):
    function = functions.resolve("echo", scripts_dir(tmp_path, {"echo.py": ECHO}))
    background = np.full(FRAME.shape, 30.0)
    parameters = {**config, "background_data": background}
    if "image_background_enable" in config:
        parameters["image_background"] = "b"
    image = FRAME.copy()  # writable, as a frame the function must not change
    got = function(image, 7, TIMESTAMP, *AXES, parameters)
    standard = StandardProcessing()(FRAME, 7, TIMESTAMP, *AXES, parameters)
    for key in ("image", "x_axis", "y_axis"):
        assert got[key].dtype == standard[key].dtype, key
        np.testing.assert_array_equal(got[key], standard[key], err_msg=key)
    assert got["writable"] is False
    assert not any(got[key].flags.writeable for key in ("image", "x_axis", "y_axis"))
    np.testing.assert_array_equal(image, FRAME)
    assert image.flags.writeable and AXES[0].flags.writeable  # only the function's views are


def test_averaging_holds_frames_back_and_state_follows_the_config(tmp_path, restore_imports):
    counter = b"""
calls = []
def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    calls.append(pulse_id)
    return {"mean": image, "calls": list(calls), "bsdata": bsdata}
"""
    function = functions.resolve("counter.py", scripts_dir(tmp_path, {"counter.py": counter}))
    parameters = {"averaging": 2}
    assert function(FRAME, 1, TIMESTAMP, *AXES, parameters) is None
    second = function(FRAME // 2, 2, TIMESTAMP, *AXES, parameters, {"extra": 1})
    assert second["calls"] == [2] and second["bsdata"] == {"extra": 1}
    np.testing.assert_array_equal(second["mean"], (FRAME + FRAME // 2.0) / 2)
    # a new config (a new dict) starts its averaging afresh
    assert function(FRAME, 3, TIMESTAMP, *AXES, {"averaging": 2}) is None


def test_junk_results_raise_a_type_error_naming_the_function(tmp_path, restore_imports):
    junk = b"""
def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters):
    return None if pulse_id == 0 else [1, 2]
"""
    function = functions.resolve("junk", scripts_dir(tmp_path, {"junk": junk}))
    assert function(FRAME, 0, TIMESTAMP, *AXES, {}) is None
    with pytest.raises(
        TypeError, match="function 'junk' returned a list; a user function returns a dict"
    ):
        function(FRAME, 1, TIMESTAMP, *AXES, {})


def test_unknown_names_and_scripts_without_process_image_are_refused(tmp_path, restore_imports):
    scripts = scripts_dir(tmp_path, {"empty.py": b"x = 1\n"})
    with pytest.raises(ValueError, match="empty.py defines no process_image or process function"):
        functions.resolve("empty", scripts)
    with pytest.raises(ValueError, match="'nothing' is neither built in"):
        functions.resolve("nothing", scripts)
    with pytest.raises(ValueError, match="not valid Python"):
        functions.check("broken.py", b"def f(:\n", scripts)
    functions.check("fine.py", b"x = 1\n", scripts)
    assert functions.resolve("minimal", scripts).__module__ == "shmcam.processing.minimal"


def test_stream_functions_are_called_as_they_are_and_shmcam_c_is_for_images(
    tmp_path, restore_imports
):
    stream = b"def process(data, pulse_id, timestamp, parameters):\n    return 'as is'\n"
    scripts = scripts_dir(tmp_path, {"stream.py": stream, "image.c": C_NULL})
    assert functions.resolve("stream", scripts, "stream")({}, 1, TIMESTAMP, {}) == "as is"
    with pytest.raises(ValueError, match="image.c defines no process function"):
        functions.resolve("image", scripts, "stream")


def test_names_are_looked_up_in_camservers_order():
    stored = ["beam", "beam.py", "beam.abi3.so", "beam.c", "beamer.so", f"beam{EXT}", "b.py"]
    assert functions.script_names("beam", stored) == [
        "beam", "beam.c", f"beam{EXT}", "beam.abi3.so", "beam.py"
    ]  # fmt: skip
    assert functions.script_names("beam.py", stored) == ["beam.py"]
    assert functions.script_names("nothing", stored) == []


# --- C: the documented example, the build, its errors and its cache ------------------------------


def test_the_documented_c_example_matches_its_python_twin(tmp_path, restore_imports):
    scripts = scripts_dir(
        tmp_path,
        {"beam.py": doc_example("python", "beam.py"), "beam.c": doc_example("c", "beam.c")},
    )
    python = functions.resolve("beam.py", scripts)
    c = functions.resolve("beam.c", scripts)
    for config in (
        {},
        {"beam_threshold": 50, "image_region_of_interest": [10, 40, 3, 30]},
        {"binning_x": 2, "image_scale": 0.25, "mirror_y": True},
    ):
        expected = python(FRAME, 5, TIMESTAMP, *AXES, config)
        got = c(FRAME, 5, TIMESTAMP, *AXES, config)
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            np.testing.assert_allclose(got[key], value, rtol=1e-12, err_msg=key)
        assert got["intensity"] > 0
    with pytest.raises(TypeError, match="must be real number"):
        c(FRAME, 5, TIMESTAMP, *AXES, {"beam_threshold": "high"})
    # the module itself has the Python signature, bsdata optional, and checks its arguments
    module = compiled.load(scripts / "beam.c", functions.cache_dir(scripts)).process_image
    assert module(FRAME, 5, TIMESTAMP, *AXES, {}, None)["intensity"] == FRAME.sum()
    assert (
        module(
            image=FRAME, pulse_id=5, timestamp=1.5, x_axis=AXES[0], y_axis=AXES[1], parameters={}
        )["intensity"]
        == FRAME.sum()
    )
    with pytest.raises(TypeError, match="argument 1 must be numpy.ndarray, not list"):
        module([[1]], 5, TIMESTAMP, *AXES, {})


def test_c_build_errors_say_what_is_wrong_and_cache_nothing(tmp_path):
    cache = tmp_path / "cache"
    undefined = f"double helper(double);\n{SIGNATURE} {{ return PyFloat_FromDouble(helper(1)); }}\n"
    cases = {
        C_UNDECLARED: r"bad\.c:3:40: error: 'foo' undeclared",
        b"int x;\n": r"bad\.c defines no process_image function; define\nPyObject "
        r"\*process_image\(PyArrayObject \*image",
        b"PyObject *process_image(PyObject *image) { return image; }\n": (
            r"bad\.c:1:11: error: conflicting types for 'process_image'"
        ),
        undefined.encode(): r"bad\.c compiled but does not load: undefined symbol: helper",
        f"{SIGNATURE} {{ }}\n".encode(): r"error: control reaches end of non-void function",
    }
    for source, message in cases.items():
        with pytest.raises(compiled.CompileError) as error:
            compiled.build(source, "bad.c", cache)
        assert re.search(message, str(error.value)), str(error.value)
        assert ".build-" not in str(error.value) and "unit.c" not in str(error.value)
    assert list(cache.iterdir()) == []


def test_a_compiler_over_its_time_limit_is_killed(tmp_path):
    with pytest.raises(
        compiled.CompileError,
        match=r"slow\.c does not compile: gave up "
        r"after 0\.05 s",
    ):
        compiled.build(C_NULL, "slow.c", tmp_path, timeout=0.05)
    assert list(tmp_path.iterdir()) == []
    wait_for(
        lambda: subprocess.run(["pgrep", "-f", str(tmp_path)]).returncode == 1,
        timeout=5,
        what="the killed compiler's processes to be gone",
    )


def test_builds_are_cached_by_content_and_headers(tmp_path, restore_imports):
    libs, cache = tmp_path / "libs", tmp_path / "cache"
    libs.mkdir()
    (libs / "gain.h").write_text("#define GAIN 2\n")
    source = f'#include "gain.h"\n{SIGNATURE}\n{{\n    return PyLong_FromLong(GAIN);\n}}\n'
    first = compiled.build(source.encode(), "gain.c", cache, libs)
    stamp = first.stat().st_mtime_ns
    assert compiled.build(source.encode(), "other_name.c", cache, libs) == first
    assert first.stat().st_mtime_ns == stamp  # not rebuilt
    (libs / "gain.h").write_text("#define GAIN 3\n")
    second = compiled.build(source.encode(), "gain.c", cache, libs)
    assert second != first and sorted(cache.iterdir()) == sorted([first, second])
    script = tmp_path / "gain.c"
    script.write_text(source)
    assert compiled.load(script, cache, libs).process_image(FRAME, 0, TIMESTAMP, *AXES, {}) == 3


def test_a_null_result_without_an_exception_is_a_system_error(tmp_path, restore_imports):
    function = functions.resolve("null", scripts_dir(tmp_path, {"null.c": C_NULL}))
    with pytest.raises(
        SystemError, match="process_image returned NULL without setting an exception"
    ):
        function(FRAME, 0, TIMESTAMP, *AXES, {})


# --- live: uploads, pipelines, reload, libs, failures --------------------------------------------


def test_c_upload_builds_once_and_its_pipeline_streams(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    source = doc_example("c", "beam.c")
    sup.call("PUT", "/api/v1/pipeline/script/beam.c/script_bytes", data=source)
    built = list((sup.data_dir / "cache" / "c").glob("*.so"))
    assert len(built) == 1
    created = sup.call(
        "POST",
        "/api/v1/pipeline",
        params={"instance_id": "c"},
        json={
            "camera_name": "sim",
            "function": "beam",
            "beam_threshold": 20,
            "image_region_of_interest": [100, 120, 50, 80],
            "no_client_timeout": 0,
        },
    )
    for message in receive(created["stream"], 3):
        image = message.data["image"]
        assert image.shape == (80, 120)
        pixels = np.where(image >= 20, image, 0).astype(np.float64)
        np.testing.assert_array_equal(message.data["x_profile"], pixels.sum(axis=0))
        np.testing.assert_array_equal(message.data["y_axis"], np.arange(50, 130))
        assert message.data["x_center_of_mass"] == pytest.approx(
            pixels.sum(axis=0) @ np.arange(100, 220) / pixels.sum()
        )
    assert list((sup.data_dir / "cache" / "c").glob("*.so")) == built
    assert not any(
        "from beam.c" in line  # compiled.build's "built <module> from"
        for line in sup.log_lines("c")
    )
    assert info(sup, "c")["statistics"]["errors"] == 0


def test_uploads_that_cannot_load_are_400_and_store_nothing(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    answer = sup.call(
        "PUT", "/api/v1/pipeline/script/bad.c/script_bytes", data=C_UNDECLARED, expect=400
    )
    assert (
        "bad.c does not compile:\nbad.c: In function 'process_image':\nbad.c:3:40: error: "
        "'foo' undeclared" in answer["status"]
    ), answer
    assert answer["status"].endswith("nothing was stored")
    answer = sup.call(
        "PUT",
        "/api/v1/pipeline/script/bad.py/script_bytes",
        data=b"def process_image(:\n",
        expect=400,
    )
    assert "script bad.py is not valid Python: invalid syntax (bad.py, line 1)" in answer["status"]
    sup.call(
        "PUT", "/api/v1/pipeline/script/bad%2E%2Ec/script_bytes", data=C_UNDECLARED, expect=400
    )
    assert sup.call("GET", "/api/v1/pipeline/script")["scripts"] == []
    assert {
        p.relative_to(sup.data_dir).parts[0] for p in sup.data_dir.rglob("*") if p.is_file()
    } <= {"cameras"}
    # libs are data: stored as they are, never compiled
    sup.call("PUT", "/api/v1/pipeline/lib/notes.c/lib_bytes", data=b"not C at all")
    assert sup.call("GET", "/api/v1/pipeline/lib")["libs"] == ["notes.c"]


def test_reload_imports_the_edited_script_and_its_libs(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    script = b"""import os
import calibration

def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters):
    with open(os.path.join(os.environ["SHMCAM_LIBS"], "factor.txt")) as file:
        factor = float(file.read())
    return {"version": VERSION, "gain": calibration.GAIN, "factor": factor}
"""
    sup.call("PUT", "/api/v1/pipeline/lib/calibration.py/lib_bytes", data=b"GAIN = 1.5\n")
    sup.call("PUT", "/api/v1/pipeline/lib/factor.txt/lib_bytes", data=b"0.25\n")
    sup.call(
        "PUT", "/api/v1/pipeline/script/versioned.py/script_bytes", data=b"VERSION = 1\n" + script
    )
    created = sup.call(
        "POST",
        "/api/v1/pipeline",
        params={"instance_id": "r"},
        json={"camera_name": "sim", "function": "versioned", "no_client_timeout": 0},
    )

    def latest():
        data = receive(created["stream"], 1)[0].data
        return data["version"], data["gain"], data["factor"]

    assert latest() == (1, 1.5, 0.25)
    sup.call(
        "PUT", "/api/v1/pipeline/script/versioned.py/script_bytes", data=b"VERSION = 2\n" + script
    )
    sup.call("PUT", "/api/v1/pipeline/lib/calibration.py/lib_bytes", data=b"GAIN = 3.0\n")
    sup.call("POST", "/api/v1/pipeline/instance/r/config", json={"max_frame_rate": 100})
    assert receive(created["stream"], 10)[-1].data["version"] == 1  # no reload: old code
    sup.call("POST", "/api/v1/pipeline/instance/r/config", json={"reload": True})
    assert wait_for(lambda: latest() == (2, 3.0, 0.25), what="the reloaded script")
    assert info(sup, "r")["statistics"]["errors"] == 0


def test_python_errors_and_junk_are_counted_while_the_stream_goes_on(supervisor):
    """abort_on_error false: frames whose function raised or returned junk are dropped and
    counted, each failure logged with what went wrong; the others go on."""
    sup = supervisor(cameras={"sim": CAM})
    flaky = b"""
def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters):
    step = (pulse_id // 2) % 5      # a 50 Hz camera: pulse ids step by 2
    if step == 1:
        raise RuntimeError("user code failed")
    if step == 2:
        return "junk"
    return {"pulse": pulse_id}
"""
    sup.call("PUT", "/api/v1/pipeline/script/flaky.py/script_bytes", data=flaky)
    created = sup.call(
        "POST",
        "/api/v1/pipeline",
        params={"instance_id": "f"},
        json={
            "camera_name": "sim",
            "function": "flaky",
            "no_client_timeout": 0,
            "abort_on_error": False,
        },
    )
    messages = receive(created["stream"], 30)
    assert {(m.pulse_id // 2) % 5 for m in messages} == {0, 3, 4}
    assert all(m.data["pulse"] == m.pulse_id for m in messages)
    wait_for(lambda: info(sup, "f")["statistics"]["errors"] >= 4, what="the failures counted")
    log = "\n".join(sup.log_lines("f"))
    assert "RuntimeError: user code failed" in log
    assert (
        "TypeError: function 'flaky.py' returned a str; a user function returns a dict of "
        "channels, or None to drop the frame" in log
    )
    assert info(sup, "f")["is_stream_active"]


def test_a_c_function_that_does_not_compile_stops_its_pipeline_not_the_node(tmp_path, node):
    broken = {"camera_name": "sim", "function": "broken.c"}
    with node_with_scripts(
        tmp_path,
        node,
        {"broken.c": C_UNDECLARED},
        cameras={"sim": CAM},
        permanent={"perm": "broken"},
        pipelines={"broken": broken},
    ) as sup:
        answer = sup.call(
            "POST", "/api/v1/pipeline", params={"instance_id": "once"}, json=broken, expect=400
        )
        assert (
            "pipeline once did not start: CompileError: broken.c does not compile:"
            in answer["status"]
            and "'foo' undeclared" in answer["status"]
        ), answer
        records = sup.call("GET", "/api/v1/logs")["logs"]
        assert any(
            name == "shmcam.instance.once" and "'foo' undeclared" in message
            for _, name, _, message in records
        )
        # the permanent one stays known, with the compiler's message in its own log
        lines = wait_for(
            lambda: [line for line in sup.log_lines("perm") if "'foo' undeclared" in line],
            what="the compile error in the permanent instance's log",
        )
        assert "broken.c:3:40: error" in lines[0]
        assert sup.process.poll() is None
        assert sup.call("GET", "/api/v1/cam/sim")["stream"]


def test_a_segfault_kills_only_its_pipeline_and_a_permanent_one_restarts(tmp_path, node):
    crashy = {
        "camera_name": "sim",
        "function": "crash.c",
        "crash_marker": "keeper.crash",
        "no_client_timeout": 0,
    }
    with node_with_scripts(
        tmp_path,
        node,
        {"crash.c": C_CRASH},
        cameras={"sim": CAM},
        permanent={"keeper": "crashy"},
        pipelines={"crashy": crashy},
    ) as sup:
        keeper = wait_for(lambda: _running(sup, "keeper"), what="the permanent instance")
        assert receive(keeper["stream_address"], 2)
        victim = sup.call(
            "POST",
            "/api/v1/pipeline",
            params={"instance_id": "victim"},
            json={**crashy, "crash_marker": "victim.crash"},
        )
        sibling = sup.call(
            "POST",
            "/api/v1/pipeline",
            params={"instance_id": "sibling"},
            json={"camera_name": "sim", "function": "minimal", "no_client_timeout": 0},
        )
        assert receive(victim["stream"], 2)
        sibling_pid = info(sup, "sibling")["statistics"]["pid"]
        for marker in ("keeper.crash", "victim.crash"):
            sup.call("PUT", f"/api/v1/pipeline/lib/{marker}/lib_bytes", data=b"crash")
        exit_code = wait_for(
            lambda: sup.call("GET", "/api/v1/pipeline/instance/victim/exitcode")["exitcode"],
            what="the victim's exit code",
        )
        assert exit_code == -signal.SIGSEGV
        victim_log = "\n".join(sup.log_lines("victim"))
        assert "Fatal Python error: Segmentation fault" in victim_log
        assert 'user.py", line' in victim_log, victim_log  # where it called the function
        restarted = wait_for(
            lambda: (
                (i := _running(sup, "keeper"))
                and i["statistics"]["pid"] != keeper["statistics"]["pid"]
                and i
            ),
            what="the permanent instance to restart",
        )
        assert restarted["statistics"]["restarts"] == 1
        assert [m.data["pulse"] for m in receive(restarted["stream_address"], 2)]
        assert sup.call("GET", "/api/v1/pipeline/lib")["libs"] == []  # both crashed once
        assert f"pipeline keeper died (exit code {-signal.SIGSEGV})" in sup.log()
        assert sup.ended("victim")["instance_state"] == "failed"
        assert receive(sibling["stream"], 5)
        assert info(sup, "sibling")["statistics"]["pid"] == sibling_pid
        assert sup.process.poll() is None


def _running(sup, instance_id):
    """The instance's info once it is running, else None."""
    import requests

    answer = requests.get(f"{sup.url}/api/v1/pipeline/instance/{instance_id}/info", timeout=10)
    if answer.status_code != 200:
        return None
    found = answer.json()["info"]
    return found if found["is_stream_active"] else None
