"""`cam_server.pipeline.utils`: the helpers of CamServer's pipeline utilities that user code
calls, for the libraries uploaded to the node (`PUT /api/v1/pipeline/lib/<name>/lib_bytes`,
in `<data_dir>/libs`; a pipeline knows the folder from the SHMCAM_LIBS environment variable).
"""

from __future__ import annotations

import os
import sys
import warnings

from shmcam.names import FILE_NAME_RULE, is_file_name
from shmcam.processing.functions import LIBS_ENV


def get_lib_file(lib_name: str) -> str:
    """The absolute path of an uploaded library or data file."""
    folder = os.environ.get(LIBS_ENV)
    if not folder:
        raise RuntimeError(f"{LIBS_ENV} is not set: libs are known inside pipelines only")
    if not is_file_name(lib_name):
        raise ValueError(f"{lib_name!r} is not a lib name: use {FILE_NAME_RULE}")
    return os.path.join(folder, lib_name)


def import_egg(egg_name: str) -> str:
    """Make an uploaded egg (a zip of packages) importable: on sys.path after the installed
    packages (it cannot shadow them), and in pkg_resources' working set where that exists.
    Returns its path."""
    path = get_lib_file(egg_name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no lib {egg_name!r} in {os.environ[LIBS_ENV]}: upload it first")
    if path not in sys.path:
        sys.path.append(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # pkg_resources says so
            import pkg_resources
    except ImportError:
        return path
    pkg_resources.working_set.add_entry(path)
    return path
