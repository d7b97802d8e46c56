"""Node settings: /etc/shmcam/shmcam.toml, every key with a default, strictly validated.

An unknown key or a bad value stops start-up with a message naming it: a typo in a config
file must never silently fall back to a default on a production node.
"""

from __future__ import annotations

import dataclasses
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from shmcam.names import check_name

DEFAULT_CONFIG = Path("/etc/shmcam/shmcam.toml")


class SettingsError(ValueError):
    """The node configuration is invalid; the message names the key."""


@dataclass(frozen=True)
class Settings:
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    public_host: str = field(default_factory=socket.getfqdn)  # host in stream addresses
    rest_host: str = "0.0.0.0"
    rest_port: int = 8888
    camera_ports: tuple[int, int] = (10100, 10300)  # [first, last] for camera streams
    pipeline_ports: tuple[int, int] = (11100, 11200)  # [first, last] for pipeline streams
    data_dir: Path = Path("/var/lib/shmcam")  # configs, backgrounds, scripts, libs
    config_dir: Path = Path("/etc/shmcam")  # shipped cameras/ and pipelines/ TOML
    ring_slots: int = 8  # frames per camera ring
    token_file: Path | None = None  # bearer token for mutating calls
    omp_threads: int = 1  # OMP_NUM_THREADS of instances
    permanent: dict[str, str] = field(default_factory=dict)  # instance id -> pipeline config
    allow_anonymous_code: bool = False  # without a token: accept code uploads all the same
    function_dirs: tuple[Path, ...] = ()  # where `function` may name user code by path
    executable_dirs: tuple[Path, ...] = ()  # where external pipelines' programs may be
    file_dirs: tuple[Path, ...] = ()  # where FILE mode pipelines may write, besides the store
    # SwissFEL dispatchers a pipeline may ask for bsread_channels (bsread's default one)
    dispatcher_urls: tuple[str, ...] = ("https://dispatcher-api.psi.ch/sf-databuffer",)
    run_dir: Path = Path("/run/shmcam")  # the instances' pids, for the next supervisor
    stuck_timeout: float = 60.0  # s without progress before an instance is killed
    max_frame_mb: int = 64  # largest camera frame (size_x * size_y * bytes)
    max_upload_mb: int = 128  # largest script, lib or background upload
    max_config_kb: int = 1024  # largest camera or pipeline config (as JSON)
    instance_memory_mb: int = 8192  # address space of one instance; 0 for no limit
    rest_threads: int = 16  # REST request threads (slow calls may take only some of them)
    coordinator: str | None = None  # the coordinator's URL, if a coordinator manages the node

    @property
    def max_frame_bytes(self) -> int:
        return self.max_frame_mb * 2**20

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 2**20

    @property
    def max_config_bytes(self) -> int:
        return self.max_config_kb * 2**10


_INT_RANGES = {
    "rest_port": (0, 65535),
    "ring_slots": (2, 4096),
    "omp_threads": (1, 1024),
    "max_frame_mb": (1, 1 << 20),
    "max_upload_mb": (1, 1 << 20),
    "max_config_kb": (1, 1 << 20),
    "instance_memory_mb": (0, 1 << 30),
    "rest_threads": (4, 256),
}


def load(path: Path | None = None, **overrides) -> Settings:
    """Settings from a TOML file (if given and present) with command-line overrides on top.

    A missing file is an error only when it was asked for explicitly.
    """
    raw: dict = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            if path != DEFAULT_CONFIG:
                raise SettingsError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as error:
            raise SettingsError(f"{path}: not valid TOML: {error}") from None
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(raw, source=str(path or "settings"))


def from_dict(raw: dict, source: str = "settings") -> Settings:
    known = {f.name: f for f in dataclasses.fields(Settings)}
    values = {}
    for key, value in raw.items():
        if key not in known:
            raise SettingsError(f"{source}: unknown key {key!r}; known keys: {', '.join(known)}")
        values[key] = _check(key, value, source)
    settings = Settings(**values)
    for name in ("camera_ports", "pipeline_ports"):
        first, last = getattr(settings, name)
        if not 1 <= first <= last <= 65535:
            raise SettingsError(
                f"{source}: {name} must be [first, last] with "
                f"1 <= first <= last <= 65535, got {[first, last]}"
            )
    return settings


def _check(key: str, value, source: str):
    def bad(expected: str):
        return SettingsError(f"{source}: {key} must be {expected}, got {value!r}")

    if key in ("node",):
        try:
            return check_name(value, "node name")
        except ValueError as error:
            raise SettingsError(f"{source}: {key}: {error}") from None
    if key == "coordinator":
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise bad("the coordinator's http://host:port")
        return value
    if key in ("public_host", "rest_host"):
        if not isinstance(value, str) or not value:
            raise bad("a host name")
        return value
    if key in _INT_RANGES:
        low, high = _INT_RANGES[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise bad(f"an integer from {low} to {high}")
        return value
    if key in ("camera_ports", "pipeline_ports"):
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise bad("[first, last]")
        return tuple(value)
    if key == "allow_anonymous_code":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if key == "dispatcher_urls":
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, str) and v.startswith(("http://", "https://")) for v in value
        ):
            raise bad("a list of http(s) URLs")
        return tuple(v.rstrip("/") for v in value)
    if key in ("function_dirs", "executable_dirs", "file_dirs"):
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (str, Path)) and Path(v).is_absolute() for v in value
        ):
            raise bad("a list of absolute directory paths")
        return tuple(Path(v) for v in value)
    if key == "stuck_timeout":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value < 1e6:
            raise bad("a number of seconds from 1")
        return float(value)
    if key in ("data_dir", "config_dir", "token_file", "run_dir"):
        if not isinstance(value, (str, Path)) or not str(value):
            raise bad("a path")
        return Path(value)
    if key == "permanent":
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise bad("a table of instance id = pipeline config name")
        return dict(value)
    raise AssertionError(key)


def read_token(settings: Settings) -> str | None:
    """The bearer token mutating REST calls need, or None when none is configured."""
    if settings.token_file is None:
        return None
    try:
        token = settings.token_file.read_text().strip()
    except OSError as error:
        raise SettingsError(f"token_file {settings.token_file}: {error.strerror}") from None
    if not token:
        raise SettingsError(f"token_file {settings.token_file} is empty")
    return token
