#!/usr/bin/env python3
"""User code written for CamServer: what it costs per frame, and what a C build costs.

Per frame (median ms, one core, uint16 simulated beams, read-only frames as from a ring):
- `standard`: shmcam's standard function, ROI + threshold + good region;
- `camserver script`: a user script of CamServer's shape, pre-processed by the pipeline, that
  calls processor.process_image and functions.gauss_fit (what user code costs on top);
- `camserver C`: a C function in CamServer's form summing the image's columns, on the whole
  frame (handed over as it is) and on a region of interest (copied to be contiguous).
Per build (seconds, cold cache): a C source in shmcam's form, and the checks of the build
alone (includes by preprocessing, symbols by nm/readelf), against importing the module in a
fresh interpreter, which is what the upload check did before.

Usage: python bench/user_code.py [--rounds 20]
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # one core: before numpy and numba are imported
os.environ["NUMBA_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from shmcam.camserver import alias  # noqa: E402
from shmcam.processing import compiled, functions  # noqa: E402
from shmcam.processing.standard import StandardProcessing  # noqa: E402
from shmcam.sources.simulation import beam_frames  # noqa: E402

SIZES = ((1280, 960), (2560, 2160))
SCRIPT = b"""
from cam_server.pipeline.data_processing import functions, processor

def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    ret = processor.process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters)
    x_profile, _ = functions.get_x_y_profile(image)
    ret["my_x_mean"] = functions.gauss_fit(x_profile, x_axis)[3]
    return ret
"""
C_SOURCE = b"""#include "module.c"

PyObject *process(PyObject *self, PyObject *args)
{
    PyArrayObject *image, *x_axis, *y_axis;
    long pulse_id;
    PyObject *timestamp, *pars, *bsdata = NULL;
    if (!PyArg_ParseTuple(args, "OlOOOO|O", &image, &pulse_id, &timestamp, &x_axis, &y_axis,
                          &pars, &bsdata))
        return NULL;
    int width = image->dimensions[1], height = image->dimensions[0];
    unsigned short *pixels = (unsigned short *)image->data;
    npy_intp dims[1] = {width};
    PyArrayObject *profile = (PyArrayObject *)PyArray_ZEROS(1, dims, NPY_FLOAT64, 0);
    double *p = (double *)profile->data;
    for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++)
            p[x] += pixels[y * width + x];
    PyObject *ret = Py_BuildValue("{s:O}", "profile", profile);
    Py_DECREF(profile);
    return ret;
}
"""
NATIVE = b"""PyObject *process_image(PyArrayObject *image, uint64_t pulse_id, double timestamp,
                        PyArrayObject *x_axis, PyArrayObject *y_axis,
                        PyObject *parameters, PyObject *bsdata)
{
    return PyLong_FromLong(PyArray_DIM(image, 0));
}
"""


def median_ms(function, frames, axes, parameters, rounds: int) -> float:
    for frame in frames[:2]:  # compile and warm up
        function(frame, 1, (0, 0), *axes, parameters)
    times = []
    for i in range(rounds):
        frame = frames[i % len(frames)]
        start = time.perf_counter()
        function(frame, i, (0, 0), *axes, parameters)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def per_frame(rounds: int, scripts: Path) -> None:
    alias.install()
    (scripts / "camserver_user.py").write_bytes(SCRIPT)
    (scripts / "camserver_c.c").write_bytes(C_SOURCE)
    script = functions.resolve("camserver_user", scripts)
    c_function = functions.resolve("camserver_c", scripts)
    for width, height in SIZES:
        frames = beam_frames(width, height, "uint16", count=4)
        for frame in frames:
            frame.flags.writeable = False
        axes = (np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        roi = [width // 8, width // 2, height // 8, height // 2]
        config = {
            "image_region_of_interest": roi,
            "image_threshold": 1000,
            "image_good_region": {},
        }
        print(f"{width}x{height}")
        for name, function, parameters in (
            ("standard", StandardProcessing(), config),
            ("camserver script", script, config),
            ("camserver C, whole frame", c_function, {}),
            ("camserver C, ROI (copied)", c_function, {"image_region_of_interest": roi}),
        ):
            ms = median_ms(function, frames, axes, dict(parameters), rounds)
            print(f"  {name:28s} {ms:7.2f} ms")


def build_times(cache: Path) -> None:
    started = time.perf_counter()
    module = compiled.build(NATIVE, "native.c", cache)
    total = time.perf_counter() - started
    started = time.perf_counter()
    compiled.check_symbols(module, "native.c", NATIVE)
    symbols = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util, sys; s = importlib.util.spec_from_file_location("
            "sys.argv[1], sys.argv[2]); s.loader.exec_module(importlib.util.module_from_spec(s))",
            module.name.split(".")[0],
            str(module),
        ],
        check=True,
    )
    imported = time.perf_counter() - started
    print(f"C build, cold cache: {total:.2f} s in all; symbol check {symbols * 1e3:.0f} ms")
    print(f"  importing it in a fresh interpreter (the former check): {imported * 1e3:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scripts = Path(tmp) / "scripts"
        scripts.mkdir()
        per_frame(args.rounds, scripts)
        build_times(Path(tmp) / "cache")


if __name__ == "__main__":
    main()
