"""The node's persistent store: configs and their history, backgrounds, scripts and libs.

Layout under data_dir: `cameras/<name>.json`, `pipelines/<name>.json`, `backgrounds/<id>.npy`,
`scripts/<name>`, `camera_scripts/<name>`, `libs/<name>`, `programs/<name>` (external
pipelines' executables: mode 755), and
`history/<cameras|pipelines|scripts>/<name>/<UTC stamp>`.
Shipped configs are read from `config_dir/<cameras|pipelines>/<name>.toml`; a config saved in
data_dir overrides the shipped one of the same name. Every write is atomic (temp file, fsync,
rename, fsync of the directory), and a config or script is copied to history before it is
overwritten or deleted, so nothing saved is ever lost. Names are checked before any file is
touched, and resolved paths must stay inside data_dir: nothing outside it is written or removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import numpy as np

from shmcam import names
from shmcam.supervisor.arrays import check_array
from shmcam.supervisor.errors import BadRequest, Conflict, NotFound, StorageError
from shmcam.workers import backgrounds

log = logging.getLogger(__name__)

DIR_MODE = 0o755
FILE_MODE = 0o644
CONFIG_KINDS = {"camera": "cameras", "pipeline": "pipelines"}
# Pipeline scripts (user functions), camera scripts (user sources) and libs keep apart, so
# that a camera script never replaces a pipeline script of the same name.
FILE_KINDS = {
    "script": "scripts",
    "camera_script": "camera_scripts",
    "lib": "libs",
    "program": "programs",
}
_FILES_WITH_HISTORY = {"script", "camera_script"}
_EXECUTABLE_KINDS = {"program"}
_EXECUTABLE_MODE = 0o755
_HISTORY_STAMP = re.compile(r"\d{8}T\d{6}_\d{6}Z")
_HISTORY_FORMAT = "%Y%m%dT%H%M%S_%fZ"


def check_name(name: str) -> str:
    """A camera or pipeline config name (names.py: it becomes an instance id), else
    BadRequest."""
    try:
        return names.check_name(name)
    except ValueError as error:
        raise BadRequest(str(error)) from None


def check_file_name(name: str) -> str:
    """A script, lib or background name that cannot leave its directory or hide as a dot file
    (temp files are dot files), else BadRequest."""
    try:
        return names.check_file_name(name)
    except ValueError as error:
        raise BadRequest(str(error)) from None


def _subdir(kinds: dict[str, str], kind: str) -> str:
    try:
        return kinds[kind]
    except KeyError:
        raise BadRequest(f"unknown kind {kind!r}: use one of {', '.join(kinds)}") from None


# --- files -----------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    """Make a rename or unlink durable: without it a crash can bring the old entry back."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, write: Callable[[BinaryIO], object], mode: int = FILE_MODE) -> None:
    """Readers see the old file or the new one, never a partial one, even after a crash."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _names_in(directory: Path | None, suffix: str, valid=names.is_file_name) -> set[str]:
    """Valid names of the files ending in suffix; temp (dot) files and strays are skipped."""
    if directory is None or not directory.is_dir():
        return set()
    found = set()
    for entry in directory.iterdir():
        name = entry.name.removesuffix(suffix)
        if not entry.name.endswith(suffix) or not entry.is_file():
            continue
        if valid(name):
            found.add(name)
        elif not name.startswith("."):
            log.warning("ignoring %s: not a valid name", entry)
    return found


def _history_stamps(directory: Path, suffix: str) -> list[str]:
    return sorted(n for n in _names_in(directory, suffix) if _HISTORY_STAMP.fullmatch(n))


def _next_stamp(stamps: list[str]) -> str:
    """UTC now, but always after the newest stamp: two saves within one microsecond, or a clock
    stepping back, must neither overwrite a version nor break the order."""
    now = datetime.now(UTC).replace(tzinfo=None)
    if stamps:
        newest = datetime.strptime(stamps[-1], _HISTORY_FORMAT)
        now = max(now, newest + timedelta(microseconds=1))
    return now.strftime(_HISTORY_FORMAT)


# --- config formats --------------------------------------------------------------------------


def _to_json(config, what: str) -> bytes:
    """Strict JSON (no NaN, no dates), so every client can read back what was saved."""
    if not isinstance(config, dict):
        raise BadRequest(f"{what} must be a JSON object, got {type(config).__name__}")
    try:
        text = json.dumps(config, indent=2, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise BadRequest(
            f"{what} is not JSON-serialisable: {error}; use only objects, lists, "
            f"strings, finite numbers, true, false and null"
        ) from None
    return (text + "\n").encode()


def _parse(path: Path, loads: Callable[[str], object], language: str) -> dict:
    """A config file's dict (FileNotFoundError passes); a broken file is named, not a crash."""
    try:
        config = loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:  # syntax errors and bad UTF-8 are ValueErrors
        raise StorageError(
            f"{path} is not valid {language}: {error}; fix or remove the file"
        ) from None
    if not isinstance(config, dict):
        raise StorageError(f"{path} must hold a {language} object, got {type(config).__name__}")
    return config


def read_json(path: Path) -> dict:
    """Strict JSON, as the API answers it (a NaN written by hand is named, not passed on)."""
    return _parse(path, _strict_loads, "JSON")


def _strict_loads(text: str):
    def refuse(name: str):
        raise ValueError(f"{name} is not a number JSON allows")

    return json.loads(text, parse_constant=refuse)


def read_toml(path: Path) -> dict:
    """A shipped config as the JSON types the API returns; TOML dates and NaN are refused by
    name."""
    try:
        return json.loads(_to_json(_parse(path, tomllib.loads, "TOML"), str(path)))
    except BadRequest as error:
        raise StorageError(f"{error}; fix the file") from None


class ConfigStore:
    """Configs (saved and shipped), their history, backgrounds, scripts and libs of a node."""

    def __init__(
        self,
        data_dir: Path,
        config_dir: Path | None = None,
        history_limit: int = 50,
        max_config_bytes: int = 1 << 20,
    ):
        if history_limit < 1:
            raise ValueError(f"history_limit must be at least 1, got {history_limit}")
        self.max_config_bytes = max_config_bytes
        self.data_dir = Path(data_dir)
        self.config_dir = None if config_dir is None else Path(config_dir)
        self.history_limit = history_limit
        self._lock = threading.RLock()
        self._hash_cache: dict[str, tuple[tuple, str]] = {}

    # --- paths -------------------------------------------------------------------------------

    def _path(self, *parts: str) -> Path:
        """A path under data_dir, refused if it resolves elsewhere (e.g. a planted symlink)."""
        path = self.data_dir.joinpath(*parts)
        root = self.data_dir.resolve()
        if not path.resolve().is_relative_to(root):
            raise StorageError(
                f"refused: {path} leads outside the data directory {root}; remove the link"
            )
        return path

    def _config_file(self, kind: str, name: str) -> Path:
        return self._path(_subdir(CONFIG_KINDS, kind), f"{check_name(name)}.json")

    def _shipped_file(self, kind: str, name: str) -> Path | None:
        subdir, file = _subdir(CONFIG_KINDS, kind), f"{check_name(name)}.toml"
        return None if self.config_dir is None else self.config_dir / subdir / file

    def _history_dir(self, path: Path, suffix: str) -> Path:
        """history/<cameras|pipelines|scripts>/<name>/ of a stored file."""
        return self._path("history", path.parent.name, path.name.removesuffix(suffix))

    # --- writing with history ----------------------------------------------------------------

    def _archive(self, path: Path, suffix: str) -> None:
        """Copy the current version (if any) to history, then drop the oldest beyond the limit."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        history = self._history_dir(path, suffix)
        stamp = _next_stamp(_history_stamps(history, suffix))
        _write_atomic(history / f"{stamp}{suffix}", lambda file: file.write(data))
        for old in _history_stamps(history, suffix)[: -self.history_limit]:
            (history / f"{old}{suffix}").unlink()

    def _write(
        self,
        path: Path,
        write: Callable[[BinaryIO], object],
        history: str | None,
        mode: int = FILE_MODE,
    ) -> None:
        """Atomic write; `history` is the suffix of history files, None for no history."""
        with self._lock:
            if history is not None:
                self._archive(path, history)
            _write_atomic(path, write, mode)
        log.info("stored %s", path)

    def _delete(self, path: Path, history: str | None, missing: Exception) -> None:
        with self._lock:
            if not path.is_file():
                raise missing
            if history is not None:
                self._archive(path, history)
            path.unlink()
            _fsync_dir(path.parent)
        log.info("deleted %s", path)

    # --- configs -----------------------------------------------------------------------------

    def config_names(self, kind: str) -> list[str]:
        """Saved and shipped config names, sorted."""
        subdir = _subdir(CONFIG_KINDS, kind)
        shipped = None if self.config_dir is None else self.config_dir / subdir
        return sorted(
            _names_in(self._path(subdir), ".json", names.is_name)
            | _names_in(shipped, ".toml", names.is_name)
        )

    def get_config(self, kind: str, name: str) -> dict:
        """The saved config, else the shipped one; a fresh dict every call."""
        sources = [(self._config_file(kind, name), read_json)]
        shipped = self._shipped_file(kind, name)
        if shipped is not None:
            sources.append((shipped, read_toml))
        for path, read in sources:
            try:
                return read(path)
            except FileNotFoundError:
                continue
        raise NotFound(
            f"no {kind} config named {name!r}: save it first, or use one of the {kind} config names"
        )

    def check_config(self, config: dict, what: str) -> bytes:
        """The config as it would be saved: strict JSON within the size limit, else
        BadRequest (checked before anything runs with it, not only when it is saved)."""
        data = _to_json(config, what)
        if len(data) > self.max_config_bytes:
            raise BadRequest(
                f"{what} takes {len(data)} bytes as JSON, more than the node's limit of "
                f"{self.max_config_bytes} (max_config_kb); configs hold settings, not data"
            )
        return data

    def save_config(self, kind: str, name: str, config: dict) -> None:
        """Save atomically; the version it replaces goes to history first."""
        path = self._config_file(kind, name)
        data = self.check_config(config, f"{kind} config {name!r}")
        self._write(path, lambda file: file.write(data), history=".json")

    def delete_config(self, kind: str, name: str) -> None:
        """Delete a saved config (kept in history); a shipped one shows through again."""
        path = self._config_file(kind, name)
        shipped = self._shipped_file(kind, name)
        if shipped is not None and shipped.is_file():
            missing = Conflict(
                f"{kind} config {name!r} is shipped in {shipped}: it cannot be "
                f"deleted through the API; remove the file there"
            )
        else:
            missing = NotFound(f"no saved {kind} config named {name!r} to delete")
        self._delete(path, ".json", missing)

    def is_shipped(self, kind: str, name: str) -> bool:
        shipped = self._shipped_file(kind, name)
        return shipped is not None and shipped.is_file()

    def config_history(self, kind: str, name: str) -> list[str]:
        """Stamps of the earlier versions, oldest first."""
        return _history_stamps(self._history_dir(self._config_file(kind, name), ".json"), ".json")

    def get_config_version(self, kind: str, name: str, stamp: str) -> dict:
        """An earlier version, by a stamp from config_history."""
        path = self._config_file(kind, name)
        if not isinstance(stamp, str) or not _HISTORY_STAMP.fullmatch(stamp):
            raise BadRequest(
                f"invalid version {stamp!r}: use a stamp from the config history, "
                f"like 20240131T120000_000000Z"
            )
        try:
            return read_json(self._history_dir(path, ".json") / f"{stamp}.json")
        except FileNotFoundError:
            raise NotFound(
                f"{kind} config {name!r} has no version {stamp}: "
                f"see its history for the versions kept"
            ) from None

    # --- content hashes (what a coordinator compares before pushing) --------------------------

    def hashes(self) -> dict[str, dict[str, str]]:
        """sha256 of every config (as JSON with sorted keys: saved or shipped, the one in
        force), script, camera script, lib and background, by kind and name."""
        found: dict[str, dict[str, str]] = {}
        for kind in CONFIG_KINDS:
            found[kind] = {}
            for name in self.config_names(kind):
                try:
                    config = self.get_config(kind, name)
                except (StorageError, NotFound):
                    continue
                text = json.dumps(config, sort_keys=True, allow_nan=False).encode()
                found[kind][name] = hashlib.sha256(text).hexdigest()
        for kind in FILE_KINDS:
            found[kind] = {n: self.file_hash(kind, n) for n in self.file_names(kind)}
        found["background"] = {i: self.file_hash("background", i) for i in self.background_ids()}
        return found

    def file_hash(self, kind: str, name: str) -> str:
        """sha256 of a script, lib or background file, computed again only when its size or
        time changed."""
        path = self._background_file(name) if kind == "background" else self._file(kind, name)
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        cached = self._hash_cache.get(key[0])
        if cached is None or cached[0] != key:
            cached = (key, hashlib.sha256(path.read_bytes()).hexdigest())
            self._hash_cache[key[0]] = cached
        return cached[1]

    # --- the node's own state ----------------------------------------------------------------

    def read_state(self, name: str) -> dict:
        """A document the node keeps for itself in `state/` (e.g. its REST-set permanent
        instances); {} when there is none yet."""
        try:
            return read_json(self._path("state", f"{check_name(name)}.json"))
        except FileNotFoundError:
            return {}

    def write_state(self, name: str, document: dict) -> None:
        data = _to_json(document, f"state {name!r}")
        self._write(
            self._path("state", f"{check_name(name)}.json"),
            lambda file: file.write(data),
            history=None,
        )

    # --- backgrounds -------------------------------------------------------------------------

    def _background_file(self, background_id: str) -> Path:
        return self._path("backgrounds", f"{check_file_name(background_id)}.npy")

    def new_background_id(self, camera: str, when: datetime | None = None) -> str:
        """`<camera>_YYYYMMDD_HHMMSS_ffffff` in local time, as CamServer names backgrounds."""
        when = datetime.now() if when is None else when
        return check_file_name(f"{check_name(camera)}_{when.strftime('%Y%m%d_%H%M%S_%f')}")

    def save_background(self, background_id: str, array: np.ndarray) -> None:
        path = self._background_file(background_id)
        check_array(array)
        self._write(path, lambda file: np.save(file, array, allow_pickle=False), history=None)

    def get_background(self, background_id: str) -> np.ndarray:
        try:
            return np.load(self._background_file(background_id), allow_pickle=False)
        except FileNotFoundError:
            raise NotFound(
                f"no background {background_id!r}: use one of the background ids"
            ) from None

    def background_ids(self, camera: str | None = None) -> list[str]:
        """Ids oldest first; with a camera, only its own (workers/backgrounds.py)."""
        if camera is not None:
            check_name(camera)
        return backgrounds.of_camera(_names_in(self._path("backgrounds"), ".npy"), camera)

    def latest_background(self, camera: str) -> str:
        ids = self.background_ids(camera)
        if not ids:
            raise NotFound(
                f"No background matches for the specified prefix '{camera}'. (Take one first.)"
            )
        return ids[-1]

    def delete_background(self, background_id: str) -> None:
        path = self._background_file(background_id)
        self._delete(path, None, NotFound(f"no background {background_id!r} to delete"))

    # --- scripts and libs --------------------------------------------------------------------

    def _file(self, kind: str, name: str) -> Path:
        return self._path(_subdir(FILE_KINDS, kind), check_file_name(name))

    def file_names(self, kind: str) -> list[str]:
        return sorted(_names_in(self._path(_subdir(FILE_KINDS, kind)), ""))

    def get_file(self, kind: str, name: str) -> bytes:
        try:
            return self._file(kind, name).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no {kind} named {name!r}: upload it first") from None

    def save_file(self, kind: str, name: str, data: bytes) -> None:
        """Save atomically; a script's previous version goes to history first."""
        path = self._file(kind, name)
        if not isinstance(data, (bytes, bytearray)):
            raise BadRequest(
                f"{kind} {name!r}: the content must be bytes, got {type(data).__name__}"
            )
        history = "" if kind in _FILES_WITH_HISTORY else None
        mode = _EXECUTABLE_MODE if kind in _EXECUTABLE_KINDS else FILE_MODE
        self._write(path, lambda file: file.write(data), history, mode)

    def delete_file(self, kind: str, name: str) -> None:
        path = self._file(kind, name)
        history = "" if kind in _FILES_WITH_HISTORY else None
        self._delete(path, history, NotFound(f"no {kind} named {name!r} to delete"))
