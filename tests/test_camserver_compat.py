"""CamServer's user code and built-in functions on a real supervisor, checked through bsread
clients: scripts importing cam_server's modules, C in CamServer's form, prebuilt .so
modules, functions by path, CamServer's custom functions, copy, libs, the built-ins (psss
against a real Channel Access server), and what an upload of hostile C may not do."""

from __future__ import annotations

import json
import subprocess
import sysconfig
import time

import numpy as np
import pytest
from ioc import Ioc
from supervisor_harness import SIM_CAMERA, free_port_block, receive, wait_for

from shmcam.bsread import Receiver, Sender

CAM = {**SIM_CAMERA, "no_client_timeout": 0}
STANDARD_FIELDS = {
    "x_axis", "y_axis", "image", "width", "height", "processing_parameters", "timestamp",
    "min_value", "max_value", "x_profile", "y_profile", "intensity", "x_fwhm", "y_fwhm",
    "x_center_of_mass", "y_center_of_mass", "x_rms", "y_rms", "x_fit_gauss_function",
    "y_fit_gauss_function", "x_fit_offset", "x_fit_amplitude", "x_fit_mean",
    "x_fit_standard_deviation", "y_fit_offset", "y_fit_amplitude", "y_fit_mean",
    "y_fit_standard_deviation",
}  # fmt: skip

# A user script of CamServer's shape (docs/spec/camserver.md section 7).
CAMSERVER_SCRIPT = b"""
from cam_server.pipeline.data_processing import functions, processor


def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    ret = processor.process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata)
    x_profile, y_profile = functions.get_x_y_profile(image)
    _, _, _, mean, sigma, _, _ = functions.gauss_fit(x_profile, x_axis)
    ret["my_x_mean"] = mean
    ret["my_x_sigma"] = sigma
    ret["my_fwhm"] = functions.get_fwhm(x_axis, x_profile)
    ret["my_corner"] = int(functions.get_region_of_interest(image, 0, 5, 0, 5).sum())
    return ret
"""

# C in CamServer's form: image functions parse (image, pulse_id, (sec, ns), x_axis, y_axis,
# parameters, bsdata) and read numpy's array fields directly.
C_IMAGE = b"""#include "module.c"

PyObject *process(PyObject *self, PyObject *args)
{
    PyArrayObject *image, *x_axis, *y_axis;
    long pulse_id, seconds, nanos;
    PyObject *timestamp, *pars, *bsdata = NULL, *ret, *value;
    if (!PyArg_ParseTuple(args, "OlOOOO|O", &image, &pulse_id, &timestamp, &x_axis, &y_axis,
                          &pars, &bsdata) ||
        !PyArg_ParseTuple(timestamp, "ll", &seconds, &nanos))
        return NULL;
    if (pulse_id < 0) {
        PyErr_SetString(moduleErr, "Invalid Pulse ID");
        return NULL;
    }
    int width = image->dimensions[1], height = image->dimensions[0];
    unsigned short *pixels = (unsigned short *)image->data;
    npy_intp dims[1] = {width};
    PyArrayObject *profile = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT);
    float *p = (float *)profile->data;
    for (int x = 0; x < width; x++) {
        p[x] = 0;
        for (int y = 0; y < height; y++)
            p[x] += pixels[y * width + x];
    }
    ret = PyDict_New();
    PyDict_SetItemString(ret, "camera", PyDict_GetItemString(pars, "camera_name"));
    PyDict_SetItemString(ret, "image", (PyObject *)image);
    PyDict_SetItemString(ret, "x_axis", (PyObject *)x_axis);
    PyDict_SetItemString(ret, "profile", (PyObject *)profile);
    Py_DECREF(profile);
    value = PyFloat_FromDouble(((float *)x_axis->data)[0]);
    PyDict_SetItemString(ret, "first_x", value);
    Py_DECREF(value);
    value = PyLong_FromLong(seconds);
    PyDict_SetItemString(ret, "seconds", value);
    Py_DECREF(value);
    value = PyLong_FromLong(image->descr->elsize);
    PyDict_SetItemString(ret, "element_size", value);
    Py_DECREF(value);
    return ret;
}
"""
# ... and stream functions (data, pulse_id, (sec, ns), parameters).
C_STREAM = b"""#include "module.c"

PyObject *process(PyObject *self, PyObject *args)
{
    long pulse_id, seconds, nanos;
    PyObject *data, *timestamp, *pars, *ret, *value;
    if (!PyArg_ParseTuple(args, "OlOO", &data, &pulse_id, &timestamp, &pars) ||
        !PyArg_ParseTuple(timestamp, "ll", &seconds, &nanos))
        return NULL;
    PyArrayObject *image = (PyArrayObject *)PyDict_GetItemString(data, "image");
    int size = image->dimensions[0] * image->dimensions[1];
    unsigned short *pixels = (unsigned short *)image->data;
    long total = 0;
    for (int i = 0; i < size; i++)
        total += pixels[i];
    ret = PyDict_New();
    PyDict_SetItemString(ret, "image", (PyObject *)image);
    value = PyLong_FromLong(total);
    PyDict_SetItemString(ret, "total", value);
    Py_DECREF(value);
    PyDict_SetItemString(ret, "label", PyDict_GetItemString(pars, "label"));
    return ret;
}
"""
# A prebuilt extension module (built here, not by the node), module name `presum`.
PREBUILT = b"""#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <numpy/arrayobject.h>

static PyObject *process_image(PyObject *self, PyObject *args)
{
    PyArrayObject *image;
    PyObject *pulse_id, *timestamp, *x_axis, *y_axis, *pars, *bsdata = NULL;
    if (!PyArg_ParseTuple(args, "OOOOOO|O", &image, &pulse_id, &timestamp, &x_axis, &y_axis,
                          &pars, &bsdata))
        return NULL;
    npy_intp size = PyArray_SIZE(image);
    const unsigned short *pixels = PyArray_DATA(image);
    long long total = 0;
    for (npy_intp i = 0; i < size; i++)
        total += pixels[i];
    return Py_BuildValue("{s:O,s:L,s:s}", "image", image, "total", total, "origin", "so");
}

static PyMethodDef methods[] = {{"process_image", process_image, METH_VARARGS, ""},
                                {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "presum", NULL, -1, methods};

PyMODINIT_FUNC PyInit_presum(void)
{
    import_array();
    return PyModule_Create(&module);
}
"""


def upload(sup, name: str, data: bytes, expect: int = 200) -> dict:
    return sup.call("PUT", f"/api/v1/pipeline/script/{name}/script_bytes", data=data, expect=expect)


def create(sup, config: dict, expect: int = 200, **params) -> dict:
    return sup.call("POST", "/api/v1/pipeline", json=config, params=params, expect=expect)


def info(sup, instance_id: str) -> dict:
    return sup.call("GET", f"/api/v1/pipeline/instance/{instance_id}/info")["info"]


def error_of(message) -> str | None:
    return json.loads(message.data["processing_parameters"]).get("processing_error")


def through(sup, config: dict, data_for, count: int = 5, on_result=None) -> list:
    """A pipeline reading a stream this test sends (input_stream): frames data_for(pulse_id)
    are sent until count results came back (each passed to on_result as it comes);
    [(data sent, message received)]."""
    port = free_port_block(1)
    with Sender(port, queue_size=1000) as sender:
        answer = create(sup, {**config, "input_stream": f"tcp://127.0.0.1:{port}"})
        assert sender.wait_for_clients(1, 10)
        sent, got = {}, []
        with Receiver(answer["stream"], timeout=5) as client:
            pulse_id, deadline = 1000, time.monotonic() + 30
            while len(got) < count and time.monotonic() < deadline:
                sent[pulse_id] = data_for(pulse_id)
                sender.send(sent[pulse_id], pulse_id, (1700000000, pulse_id))
                pulse_id += 1
                message = client.receive(timeout=0.05)
                if message is not None:
                    got.append(message)
                    if on_result is not None:
                        on_result(message)
    assert len(got) == count, f"{len(got)} of {count} results came back"
    return [(sent[message.pulse_id], message) for message in got]


def beam(width: int, height: int, pulse_id: int) -> np.ndarray:
    """A Gaussian spot that moves with the pulse id, uint16."""
    y, x = np.mgrid[0:height, 0:width]
    center = width / 2 + (pulse_id % 7)
    spot = 1000 * np.exp(-((x - center) ** 2) / 60 - (y - height / 2) ** 2 / 30)
    return (spot + (x + y) % 5).astype(np.uint16)


# --- user code in CamServer's shapes -------------------------------------------------------------


def test_a_camserver_script_calling_processor_and_functions_runs_unchanged(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    upload(sup, "camserver_user.py", CAMSERVER_SCRIPT)
    config = {
        "camera_name": "sim",
        "image_region_of_interest": [60, 200, 40, 160],
        "image_threshold": 30,
        "image_good_region": {"threshold": 0.3},
        "no_client_timeout": 0,
    }
    mine = create(sup, {**config, "function": "camserver_user"})
    standard = create(sup, config)
    with Receiver(mine["stream"], timeout=5) as a, Receiver(standard["stream"], timeout=5) as b:
        ours = {m.pulse_id: m for m in (a.receive() for _ in range(15))}
        theirs = [m for m in (b.receive() for _ in range(15)) if m.pulse_id in ours]
    assert theirs, "the two pipelines shared no pulse id"
    for expected in theirs:
        got = ours[expected.pulse_id].data
        assert error_of(ours[expected.pulse_id]) is None
        assert set(got) == set(expected.data) | {"my_x_mean", "my_x_sigma", "my_fwhm", "my_corner"}
        assert STANDARD_FIELDS <= set(got) and "good_region" in got
        for key, value in expected.data.items():
            if key != "processing_parameters":  # names the function
                np.testing.assert_array_equal(got[key], value, err_msg=key)
        assert got["image"].shape == (160, 200)  # pre-processed once, not twice
        assert got["my_x_mean"] == got["x_fit_mean"]
        assert got["my_x_sigma"] == got["x_fit_standard_deviation"]
        assert got["my_fwhm"] == got["x_fwhm"]
        assert got["my_corner"] == got["image"][:5, :5].sum()


def test_c_in_camserver_form_builds_and_runs_for_images_and_streams(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    upload(sup, "cs_image.c", C_IMAGE)
    upload(sup, "cs_stream.c", C_STREAM)
    image = create(
        sup,
        {
            "camera_name": "sim",
            "function": "cs_image",
            "image_region_of_interest": [100, 120, 50, 80],  # a view: handed over contiguous
            "mirror_x": True,
            "no_client_timeout": 0,
        },
    )
    for message in receive(image["stream"], 3):
        data = message.data
        assert data["image"].shape == (80, 120) and data["camera"] == "sim"
        np.testing.assert_array_equal(data["profile"], data["image"].sum(0).astype(np.float32))
        assert data["x_axis"][0] == 219 and data["first_x"] == 219  # mirrored ROI
        assert data["seconds"] == message.global_timestamp[0]
        assert data["element_size"] == 2
    stream = create(
        sup,
        {"pipeline_type": "stream", "camera_name": "sim", "function": "cs_stream", "label": "L"},
    )
    for message in receive(stream["stream"], 3):
        assert message.data["total"] == message.data["image"].sum()
        assert message.data["label"] == "L"
    assert info(sup, image["instance_id"])["statistics"]["errors"] == 0


def test_a_prebuilt_so_is_found_before_a_python_script_of_the_same_name(supervisor, tmp_path):
    source = tmp_path / "presum.c"
    source.write_bytes(PREBUILT)
    built = tmp_path / f"presum{sysconfig.get_config_var('EXT_SUFFIX')}"
    include = sysconfig.get_paths()["include"]
    subprocess.run(
        ["gcc", "-shared", "-fPIC", f"-I{include}", f"-I{np.get_include()}", str(source),
         "-o", str(built)],
        check=True,
    )  # fmt: skip
    sup = supervisor(cameras={"sim": CAM}, token="t0ken")  # prebuilt binaries need one
    upload(sup, "presum.py", b"def process_image(image, *args):\n    return {'origin': 'py'}\n")
    upload(sup, built.name, built.read_bytes())
    answer = upload(sup, "junk.so", b"not an ELF file", expect=400)
    assert "junk.so is not a shared library" in answer["status"]
    created = create(sup, {"camera_name": "sim", "function": "presum", "mirror_y": True})
    for message in receive(created["stream"], 3):
        assert message.data["origin"] == "so"  # CamServer's order: .c, .so, .py
        assert message.data["total"] == message.data["image"].sum()


def test_functions_by_path_only_inside_function_dirs(supervisor, tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "bypath.py").write_text(
        "def process_image(image, *args, **kwargs):\n    return {'from': 'path'}\n"
    )
    (outside / "evil.py").write_text("def process_image(*args):\n    return {'from': 'evil'}\n")
    (allowed / "link.py").symlink_to(outside / "evil.py")
    sup = supervisor(cameras={"sim": CAM}, settings={"function_dirs": [str(allowed)]})
    created = create(sup, {"camera_name": "sim", "function": str(allowed / "bypath.py")})
    assert receive(created["stream"])[0].data["from"] == "path"
    for name, message in (
        (str(allowed / "link.py"), "is outside the folders this node runs functions from"),
        (str(outside / "evil.py"), "is outside the folders"),
        (f"{allowed}/../outside/evil.py", "is outside the folders"),
        ("allowed/bypath.py", "is not an absolute path"),
        (str(allowed / "missing.py"), "is not a file"),
    ):
        answer = create(sup, {"camera_name": "sim", "function": name}, expect=400)
        assert message in answer["status"], answer


def test_process_fallback_copy_libs_and_script_pipelines(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    upload(
        sup,
        "inplace.py",
        b"""
def process(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    image[0, 0] = 7
    return {"image": image}
""",
    )
    copied = create(sup, {"camera_name": "sim", "function": "inplace", "copy": True})
    message = receive(copied["stream"])[0]
    assert message.data["image"][0, 0] == 7 and error_of(message) is None
    shared = create(sup, {"camera_name": "sim", "function": "inplace"}, instance_id="inplace")
    report = wait_for(  # abort_on_error: the failing write ends the instance
        lambda: (
            (r := sup.call("GET", "/api/v1/pipeline/instance/inplace/exitcode"))["exitcode"] and r
        ),
        what="the pipeline to end",
    )
    assert "read-only" in report["last_error"] and shared["instance_id"] == "inplace"
    answer = create(sup, {"camera_name": "sim", "copy": "yes"}, expect=400)
    assert "copy must be true or false" in answer["status"]
    answer = create(sup, {"camera_name": "sim", "libs": ["calib.py"]}, expect=400)
    assert "libs 'calib.py' not uploaded" in answer["status"]
    sup.call("PUT", "/api/v1/pipeline/lib/calib.py/lib_bytes", data=b"GAIN = 2\n")
    create(sup, {"camera_name": "sim", "libs": ["calib.py"]})
    answer = create(sup, {"camera_name": "sim", "libs": "calib.py"}, expect=400)
    assert "libs must be a list of uploaded lib names" in answer["status"]
    answer = create(sup, {"pipeline_type": "script", "pipeline_script": "mine"}, expect=400)
    for alternative in ("custom pipeline", "stream pipeline", "external pipeline"):
        assert alternative in answer["status"]


def test_camserver_custom_functions_stamp_their_data(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    upload(
        sup,
        "counter.py",
        b"""
count = 0

def process(parameters, init):
    global count
    count += 1
    if count % 2:
        return None, None, None, 0            # nothing this time
    return {"n": count, "first": init}, 1234.5, 10_000 + count, 8
""",
    )
    created = create(sup, {"pipeline_type": "custom", "function": "counter", "max_frame_rate": 50})
    messages = receive(created["stream"], 4)
    for message in messages:
        assert message.pulse_id == 10_000 + message.data["n"] and message.data["n"] % 2 == 0
        assert message.global_timestamp == (1234, 500_000_000)
        assert not message.data["first"]  # True on the very first call only (it sent nothing)
    example = create(
        sup, {"pipeline_type": "custom", "function": "custom_pipeline", "max_frame_rate": 50}
    )
    for message in receive(example["stream"], 3):
        assert {"scalar", "waveform", "image", "str"} <= set(message.data)
        assert message.data["scalar"] == 10.0 and message.data["image"].shape == (10, 20)
        assert abs(message.global_timestamp[0] - time.time()) < 60


# --- built-in functions --------------------------------------------------------------------------


def test_transparent_and_merge(supervisor):
    sup = supervisor(cameras={"sim": CAM})
    roi = [10, 60, 5, 30]
    transparent = create(
        sup, {"camera_name": "sim", "function": "transparent", "image_region_of_interest": roi}
    )
    message = receive(transparent["stream"])[0]
    assert set(message.data) == {
        "x_axis", "y_axis", "width", "height", "image", "processing_parameters", "timestamp"
    }  # fmt: skip
    assert message.data["image"].shape == (30, 60) and message.data["width"] == 60
    assert message.data["timestamp"] == pytest.approx(
        message.global_timestamp[0] + message.global_timestamp[1] / 1e9
    )
    assert json.loads(message.data["processing_parameters"])["function"] == "transparent"

    def frame(pulse_id):
        return {
            "image": beam(80, 60, pulse_id),
            "x_axis": np.arange(80, dtype=np.float32),
            "y_axis": np.arange(60, dtype=np.float32),
            "BEAM:ENERGY": float(pulse_id) / 10,
        }

    merged = through(
        sup,
        {"camera_name": "sim", "function": "merge", "image_region_of_interest": roi},
        frame,
    )
    for sent, message in merged:
        assert STANDARD_FIELDS | {"BEAM:ENERGY"} <= set(message.data)
        assert message.data["BEAM:ENERGY"] == sent["BEAM:ENERGY"]
        np.testing.assert_array_equal(message.data["image"], sent["image"][5:35, 10:70])


def test_psen_profiles_of_its_regions(supervisor):
    sup = supervisor(cameras={"sim": CAM, "PSEN1": CAM})
    signal, background = [5, 40, 10, 20], [50, 20, 0, 8]
    results = through(
        sup,
        {"camera_name": "PSEN1", "function": "psen", "roi_signal": signal,
         "roi_background": background},
        lambda pulse_id: {"image": beam(80, 60, pulse_id)},
    )  # fmt: skip
    for sent, message in results:
        image = sent["image"]
        assert json.loads(message.data["PSEN1.processing_parameters"]) == {
            "roi_signal": signal,
            "roi_background": background,
        }
        np.testing.assert_array_equal(
            message.data["PSEN1.roi_signal_x_profile"], image[10:30, 5:45].sum(0)
        )
        np.testing.assert_array_equal(
            message.data["PSEN1.roi_background_x_profile"], image[0:8, 50:70].sum(0)
        )


def test_propagate_stream_and_prefix(supervisor):
    sup = supervisor(cameras={"sim": CAM})

    def data(pulse_id):
        return {"a": pulse_id, "b": np.arange(3.0) * pulse_id}

    for sent, message in through(
        sup, {"pipeline_type": "stream", "function": "propagate_stream"}, data
    ):
        assert message.data["a"] == sent["a"]
        np.testing.assert_array_equal(message.data["b"], sent["b"])
    prefixed = through(
        sup,
        {"pipeline_type": "stream", "function": "propagate_stream_with_prefix", "prefix": "X:"},
        data,
    )
    for sent, message in prefixed:
        assert set(message.data) >= {"X:a", "X:b"} and message.data["X:a"] == sent["a"]
    answer = create(
        sup,
        {"pipeline_type": "stream", "function": "propagate_stream", "prefix": 3,
         "input_stream": "tcp://127.0.0.1:1"},
        expect=400,
    )  # fmt: skip
    assert "prefix must be a string" in answer["status"]
    answer = create(sup, {"camera_name": "sim", "function": "propagate_stream"}, expect=400)
    assert "'propagate_stream' is a built-in stream function" in answer["status"]


@pytest.fixture
def psss_ioc(monkeypatch):
    ioc = Ioc("psss", "PSSS01", 200, 0, 1.0).start()
    for key, value in ioc.env.items():
        monkeypatch.setenv(key, value)
    yield ioc
    ioc.kill()


def test_psss_reads_its_pvs_and_writes_its_results_back(supervisor, psss_ioc):
    from caproto.sync.client import read, write
    from scipy.signal import savgol_filter

    write("PSSS01:SPC_ROI_YMIN", [10], notify=True)
    write("PSSS01:SPC_ROI_YMAX", [40], notify=True)
    sup = supervisor(cameras={"sim": CAM, "PSSS01": CAM})
    energy = 100 + 0.5 * np.arange(200)
    y, x = np.mgrid[0:60, 0:200]
    line = 200 * np.exp(-((x - 120) ** 2) / (2 * 20.0**2))  # centre 160 eV, sigma 10 eV
    image = (line * (abs(y - 25) < 20) + 3).astype(np.uint16)

    results = []

    def narrower_after_ten(message):  # a narrower band, while the pipeline runs
        results.append(message)
        if len(results) == 10:
            write("PSSS01:SPC_ROI_YMIN", [38], notify=True)

    config = {"camera_name": "PSSS01", "function": "psss", "pixel_bkg": 3}
    bands = []
    for _, message in through(
        sup, config, lambda pulse_id: {"image": image}, count=150, on_result=narrower_after_ten
    ):
        data = message.data
        ymin, ymax = json.loads(data["PSSS01:processing_parameters"])["roi"]
        bands.append((ymin, ymax))
        expected = image[ymin:ymax].sum(0).astype(np.float64) - (ymax - ymin) * 3
        np.testing.assert_allclose(data["PSSS01:SPECTRUM_Y"], expected)
        np.testing.assert_allclose(data["PSSS01:SPECTRUM_X"], energy)
        # the smoothing (Savitzky-Golay 51, 3) widens the line a little
        assert data["PSSS01:SPECTRUM_CENTER"] == pytest.approx(160.0, abs=0.05)
        assert data["PSSS01:SPECTRUM_FWHM"] == pytest.approx(2.355 * 10, rel=0.05)
        smoothed = savgol_filter(expected, 51, 3)
        weights = smoothed - smoothed.min()
        com = (energy * weights).sum() / weights.sum()
        assert data["PSSS01:SPECTRUM_COM"] == pytest.approx(com)
        assert com == pytest.approx(160, abs=0.2)  # the tails are cut unevenly
        std = np.sqrt(((energy - com) ** 2 * weights).sum() / weights.sum())
        assert data["PSSS01:SPECTRUM_STD"] == pytest.approx(std)
    assert bands[0] == (10, 40) and bands[-1] == (38, 40), bands
    assert bands == sorted(bands)  # once changed, it stays
    written = wait_for(
        lambda: (value := read("PSSS01:SPECTRUM_STD").data[0]) == pytest.approx(std) and value,
        what="the results of the last frame written to their PVs",
    )
    assert written == pytest.approx(std)
    assert read("PSSS01:SPECTRUM_CENTER").data[0] == pytest.approx(160.0, abs=0.05)
    assert read("PSSS01:SPECTRUM_FWHM").data[0] == pytest.approx(2.355 * 10, rel=0.05)
    np.testing.assert_allclose(read("PSSS01:SPECTRUM_Y").data, expected)


# --- uploads of hostile C -----------------------------------------------------------------------


def test_a_c_upload_runs_no_code_and_shows_no_other_file(supervisor, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2secret\n")
    marker = tmp_path / "constructor_ran"
    sup = supervisor(cameras={"sim": CAM}, token="tok3nv4lue")
    constructor = f"""#include <stdio.h>
__attribute__((constructor)) static void at_load(void)
{{
    fclose(fopen("{marker}", "w"));
}}

PyObject *process_image(PyArrayObject *image, uint64_t pulse_id, double timestamp,
                        PyArrayObject *x_axis, PyArrayObject *y_axis,
                        PyObject *parameters, PyObject *bsdata)
{{
    return Py_BuildValue("{{s:i}}", "n", 1);
}}
""".encode()
    upload(sup, "ctor.c", constructor)
    assert not marker.exists(), "a constructor ran at upload"
    created = create(sup, {"camera_name": "sim", "function": "ctor"})
    assert receive(created["stream"])[0].data["n"] == 1
    assert marker.exists()  # it does run where user code runs: in the pipeline
    hostile = {
        "include.c": f'#include "{secret}"\n',
        "relative.c": f"#include <../../../../../../../../{secret}>\n",
        "token.c": f'#include "{sup.config_file.parent / "token"}"\n',
        "before.c": f'int f(void) {{ return 1\n#include "{secret}"\n; }}\n',
        "line.c": f'#line 1 "{secret}"\nint b = c;\n',
        "asm.c": f'__asm__(".include \\"{secret}\\"");\n',
        "camserver.c": f'#include "module.c"\n#include "{secret}"\n',
    }
    for name, source in hostile.items():
        answer = upload(sup, name, source.encode(), expect=400)
        assert "hunter2" not in answer["status"] and "tok3n" not in answer["status"], answer
        assert answer["status"].startswith(name), answer
    assert sup.call("GET", "/api/v1/pipeline/script")["scripts"] == ["ctor.c"]
