"""The one naming rule for what shmcam names: nodes, cameras, pipelines, instances, rings.

A camera's or pipeline's config name becomes its instance id, and instance ids and node names
become parts of shared-memory segment names (`shmcam.<node>.<instance>...`, dots separating
the parts): so all of them follow one rule, checked wherever a name enters (REST, shipped and
saved configs, node settings), and a name that saves is a name that can start. Files of the
store (scripts, libs, backgrounds) may also hold dots, for their extensions.
"""

from __future__ import annotations

import re

NAME_RULE = "1-100 characters from A-Z a-z 0-9 _ : + -, not starting with '-'"
FILE_NAME_RULE = (
    "1-100 characters from A-Z a-z 0-9 _ . : + -, not starting with '.' or '-' and without '..'"
)
_NAME = re.compile(r"[A-Za-z0-9_:+][A-Za-z0-9_:+-]{0,99}")
_FILE_NAME = re.compile(r"[A-Za-z0-9_:+][A-Za-z0-9_.:+-]{0,99}")


def is_name(name) -> bool:
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def is_file_name(name) -> bool:
    return isinstance(name, str) and _FILE_NAME.fullmatch(name) is not None and ".." not in name


def _shown(name) -> str:
    text = repr(name)
    return text if len(text) <= 120 else text[:117] + "..."


def check_name(name, what: str = "name") -> str:
    """A node, camera, pipeline or instance name, else ValueError saying the rule."""
    if not is_name(name):
        raise ValueError(f"invalid {what} {_shown(name)}: use {NAME_RULE}")
    return name


def check_file_name(name, what: str = "name") -> str:
    """A script, lib or background name, else ValueError saying the rule."""
    if not is_file_name(name):
        raise ValueError(f"invalid {what} {_shown(name)}: use {FILE_NAME_RULE}")
    return name
