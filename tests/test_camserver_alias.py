"""The `cam_server` import alias: shmcam's modules under CamServer's paths, unless the real
package is installed. Run in fresh interpreters: the alias is process-wide."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from shmcam.camserver import alias
alias.install()
import cam_server.pipeline.data_processing as dp
from cam_server.pipeline import data_processing
import shmcam.camserver.pipeline.data_processing as real
print(dp is real, data_processing is real, dp.__name__)
try:
    import cam_server.no_such_module
except ModuleNotFoundError as error:
    print("missing:", error.name)
"""


def run(code: str, env: dict | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cam_server_paths_are_shmcams_modules():
    out = run(PROBE).splitlines()
    assert out[0] == "True True shmcam.camserver.pipeline.data_processing"
    assert out[1] == "missing: cam_server.no_such_module"


def test_without_install_cam_server_is_not_importable():
    out = run("try:\n import cam_server\nexcept ModuleNotFoundError:\n print('absent')")
    assert out.strip() == "absent"


def test_a_real_cam_server_package_wins(tmp_path):
    (tmp_path / "cam_server").mkdir()
    (tmp_path / "cam_server" / "__init__.py").write_text("REAL = True\n")
    import os

    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = run(
        "from shmcam.camserver import alias\nalias.install()\nimport cam_server\n"
        "print(getattr(cam_server, 'REAL', False))",
        env,
    )
    assert out.strip() == "True"


def test_camservers_modules_for_user_code_import_by_its_paths():
    """Every module user code written for CamServer imports, and the names it takes from them."""
    modules = {
        "pipeline.data_processing.functions": "gauss_fit get_fwhm binning get_png_from_image",
        "pipeline.data_processing.processor": "process_image",
        "pipeline.data_processing.default": "process_image",
        "pipeline.data_processing.transparent": "process_image",
        "pipeline.data_processing.merge": "process_image",
        "pipeline.data_processing.psen": "process_image",
        "pipeline.data_processing.psss": "process_image",
        "pipeline.data_processing.propagate_stream": "process",
        "pipeline.data_processing.propagate_stream_with_prefix": "process",
        "pipeline.data_processing.custom_pipeline": "process",
        "pipeline.utils": "import_egg get_lib_file",
    }
    code = "from shmcam.camserver import alias\nalias.install()\nimport importlib\n" + "".join(
        f"print(all(callable(getattr(importlib.import_module('cam_server.{module}'), n)) "
        f"for n in {names.split()!r}))\n"
        for module, names in modules.items()
    )
    assert run(code).split() == ["True"] * len(modules)
