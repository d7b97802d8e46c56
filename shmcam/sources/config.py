"""Camera configs (docs/cameras.md, CamServer's keys of docs/spec/camserver.md §2) parsed once,
with their defaults, for the supervisor's validation and the camera instance alike.

Every key CamServer knows is either honoured or refused with a message saying what shmcam does
instead; a key of another source type is refused too (it would do nothing here). Keys unknown
to both pass through. A null value never overrides a default. Errors are ValueErrors naming the
key. Pure Python without numpy, pyepics or zmq: the supervisor imports this.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shmcam.names import FILE_NAME_RULE, is_file_name

# source_type -> the class that reads it ("module:Class", imported only by the camera that
# uses it: pyepics, h5py and redis stay out of other processes).
SOURCE_TYPES = {
    "epics": "shmcam.sources.epics:EpicsSource",
    "simulation": "shmcam.sources.simulation:SimulationSource",
    "area_detector": "shmcam.sources.area_detector:AreaDetectorSource",
    "bsread": "shmcam.sources.bsread_camera:BsreadCamera",
    "bsread_simulation": "shmcam.sources.bsread_camera:BsreadCamera",
    "bschannel": "shmcam.sources.bschannel:BschannelSource",
    "stddaq": "shmcam.sources.bschannel:StddaqSource",
    "stream": "shmcam.sources.zmq_images:StdDaqImageSource",
    "array10": "shmcam.sources.zmq_images:Array10Source",
    "hdf5": "shmcam.sources.hdf5:Hdf5Source",
    "script": "shmcam.sources.script:ScriptSource",
}
DEFAULT_SOURCE_TYPE = "epics"  # as in CamServer
# What `source` names, per source type; None: optional, anything.
SOURCE_FORMS = {
    "epics": "the camera's PV prefix",
    "area_detector": "the IOC's PV prefix",
    "bsread": "the camera's PV prefix (for a stream address use source_type bschannel)",
    "bsread_simulation": "the image channel's prefix (<source>:FPICTURE)",
    "bschannel": "a bsread stream address such as tcp://host:9000",
    "stddaq": "the std-daq device name (its stream address is looked up in Redis)",
    "stream": "a std-daq image stream address such as tcp://host:9000",
    "array10": "an array-1.0 stream address such as tcp://host:9000",
    "hdf5": '"<file>:<dataset path>"',
    "simulation": None,
    "script": None,
}
STREAM_ADDRESS_TYPES = ("bschannel", "stream", "array10")
PV_PREFIX_TYPES = ("epics", "area_detector", "bsread")
COMPRESSIONS = (None, False, True, "none", "lz4", "bitshuffle_lz4")
# numpy type names a camera image may have: what the ring, bsread and the processing carry.
IMAGE_DTYPES = (
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float32",
    "float64",
)
IMAGE_TYPES = ("beam", "raw", "static_beam", "static_raw")
PULSE_ID_PVS = ("ArrayCounter_RBV", "UniqueId_RBV")
BSREAD_SIMULATION_URL = "tcp://127.0.0.1:9999"  # CamServer's fixed address of the simulation
STDDAQ_REDIS = "sf-daq-6.psi.ch:6379"  # CamServer's default Redis of std-daq

# Keys shmcam used before it followed CamServer, and keys CamServer reads that shmcam replaces:
# refused with what to write instead.
REFUSED = {
    "source_mode": "use CamServer's mode (SUB or PULL)",
    "image_channel": "use CamServer's channel",
    "source_timeout": "use CamServer's timeout, in milliseconds",
    "interval": "a hdf5 camera replays at frame_rate (frames per second); CamServer reads "
    "interval but never uses it: drop it, or set frame_rate to 1/interval",
}


def _is_bool(value) -> bool:
    return isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(value) -> bool:
    return _is_int(value) and value > 0


def _positive(value) -> bool:
    return _is_number(value) and value > 0


def _text(value) -> bool:
    return isinstance(value, str) and bool(value)


def _stream_address(value) -> bool:
    return _text(value) and "://" in value


def _names(value) -> bool:
    return _text(value) or (isinstance(value, list) and all(map(_text, value)))


def _port(value) -> bool:
    return _is_int(value) and 1 <= value <= 65535


def _roi(value) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(map(_is_int, value))
        and min(value) >= 0
        and value[1] > 0
        and value[3] > 0
    )


def _redis_address(value) -> bool:
    """host or host:port."""
    if not _text(value) or "://" in value:
        return False
    host, colon, port = value.rpartition(":")
    return not colon or (bool(host) and port.isdigit() and 0 < int(port) < 65536)


@dataclass(frozen=True)
class Key:
    check: Callable[[Any], bool]
    expected: str
    default: Any = None
    types: tuple[str, ...] | None = None  # the source types it applies to; None: every type


BSREAD_TYPES = ("bsread", "bsread_simulation")
SCRIPT_NAME = f"the name of an uploaded camera script ({FILE_NAME_RULE})"
COMPRESSION = "true (bitshuffle_lz4), false, 'lz4' or 'bitshuffle_lz4'"
KEYS = {
    "name": Key(_text, "a name"),
    "source_type": Key(lambda v: v in SOURCE_TYPES, f"one of {', '.join(SOURCE_TYPES)}"),
    "mirror_x": Key(_is_bool, "true or false", False),
    "mirror_y": Key(_is_bool, "true or false", False),
    "rotate": Key(_is_int, "an integer (quarter turns counter-clockwise)", 0),
    "roi": Key(_roi, "[offset_x, size_x, offset_y, size_y] (integers, sizes positive)"),
    "binning_x": Key(_positive_int, "a positive integer", 1),
    "binning_y": Key(_positive_int, "a positive integer", 1),
    "binning_mean": Key(_is_bool, "true or false", False),
    "image_background": Key(
        lambda v: _is_bool(v) or is_file_name(v),
        f"a stored background id ({FILE_NAME_RULE}), or true for the camera's latest",
    ),
    "protocol": Key(lambda v: v in ("tcp", "ipc"), "'tcp' or 'ipc'", "tcp"),
    "port": Key(_port, "a TCP port number"),
    "no_client_timeout": Key(_is_number, "a number of seconds (0 or less: never stop)"),
    "queue_size": Key(_positive_int, "a positive integer", 100),
    "dtype": Key(lambda v: v in IMAGE_DTYPES, f"one of {', '.join(IMAGE_DTYPES)}"),
    "frame_rate": Key(_positive, "a positive number (frames per second)"),
    "simulate_pulse_id": Key(_is_bool, "true or false", False),
    "check_data": Key(_is_bool, "true or false", False),
    "abort_on_error": Key(_is_bool, "true or false", True),
    "debug": Key(_is_bool, "true or false", False),
    "threaded": Key(_is_bool, "true or false", False),
    "image_compression": Key(lambda v: v in COMPRESSIONS, COMPRESSION),
    "data_header_compression": Key(lambda v: v in COMPRESSIONS, COMPRESSION),
    "scalar_compression": Key(lambda v: v in COMPRESSIONS, COMPRESSION),
    "forwarder_port": Key(_port, "a TCP port number"),
    "forwarder_compression": Key(lambda v: v in COMPRESSIONS, COMPRESSION),
    "forwarder_data_header_compression": Key(lambda v: v in COMPRESSIONS, COMPRESSION),
    "alias": Key(_names, "a name or a list of names"),
    "group": Key(_names, "a name or a list of names"),
    # per source type
    "size_x": Key(_positive_int, "a positive integer", 1280, ("simulation",)),
    "size_y": Key(_positive_int, "a positive integer", 960, ("simulation",)),
    "image_type": Key(
        lambda v: v in IMAGE_TYPES, f"one of {', '.join(IMAGE_TYPES)}", "beam", ("simulation",)
    ),
    "pulse_id_pv": Key(
        lambda v: v in PULSE_ID_PVS,
        f"one of {', '.join(PULSE_ID_PVS)}",
        PULSE_ID_PVS[0],
        ("area_detector",),
    ),
    "url": Key(
        _stream_address, "a bsread stream address such as tcp://host:9000", None, BSREAD_TYPES
    ),
    "connections": Key(_positive_int, "a positive integer", 1, BSREAD_TYPES),
    "buffer_size": Key(lambda v: _is_int(v) and v >= 0, "an integer >= 0", 0, BSREAD_TYPES),
    "buffer_threshold": Key(
        lambda v: _is_number(v) and 0 <= v <= 1, "a number from 0 to 1", 0.5, BSREAD_TYPES
    ),
    "enforce_pid": Key(_is_bool, "true or false", True, BSREAD_TYPES),
    "enforce_timestamp": Key(_is_bool, "true or false", True, BSREAD_TYPES),
    "check_timestamp": Key(_is_bool, "true or false", True, BSREAD_TYPES),
    "mode": Key(
        lambda v: v in ("SUB", "PULL"), "'SUB' or 'PULL'", "SUB", ("bschannel", "stddaq", "array10")
    ),
    "channel": Key(_text, "a channel name", None, ("bschannel", "stddaq")),
    "timeout": Key(
        lambda v: _is_number(v) and (v > 0 or v == -1),
        "a positive number of milliseconds, or -1 (no limit)",
        -1,
        ("bschannel", "stddaq"),
    ),
    "db": Key(
        lambda v: (_is_int(v) and v >= 0) or (isinstance(v, str) and v.isdigit()),
        "a Redis database number",
        "0",
        ("stddaq",),
    ),
    "class": Key(is_file_name, SCRIPT_NAME, None, ("script",)),
    "source_class": Key(_text, "a class name", None, ("script",)),
}
# url means a Redis address for stddaq: same key, another meaning (CamServer's).
STDDAQ_URL = Key(_redis_address, "a Redis address host:port", STDDAQ_REDIS, ("stddaq",))
CALIBRATION = {
    "reference_marker": [0, 0, 100, 100],
    "reference_marker_width": 100.0,
    "reference_marker_height": 100.0,
    "angle_horizontal": 0.0,
    "angle_vertical": 0.0,
}


def source_type(config: dict) -> str:
    return config.get("source_type") or DEFAULT_SOURCE_TYPE


def source_class(config: dict):
    """The class that reads the config's source type (its module imported now)."""
    module, name = SOURCE_TYPES[source_type(config)].split(":")
    return getattr(importlib.import_module(module), name)


def parse(config) -> dict:
    """A copy of the config with every key of its source type, defaults filled in;
    ValueError naming the first key that is refused or wrong."""
    if not isinstance(config, dict):
        raise ValueError(f"a camera config must be a JSON object, got {type(config).__name__}")
    kind = source_type(config)
    script = config.get("class")
    if isinstance(script, str) and ("/" in script or script.startswith("cam_server.")):
        raise ValueError(
            f"class {_shown(script)}: shmcam runs uploaded camera scripts only, by name "
            "(PUT /api/v1/cam/script/<name>/script_bytes), not a path nor CamServer's "
            "built-in camera modules"
        )
    parsed = dict(config)
    for name, key in KEYS.items():
        if kind == "stddaq" and name == "url":
            key = STDDAQ_URL
        value = config.get(name)
        if value is None:
            if key.types is None or kind in key.types:
                parsed[name] = key.default
            continue
        if not key.check(value):
            raise ValueError(f"{name} must be {key.expected}, got {_shown(value)}")
        if key.types is not None and kind not in key.types:
            raise ValueError(
                f"{name} applies to source_type {' and '.join(key.types)}, not to {kind}; remove it"
            )
    for name, instead in REFUSED.items():
        if config.get(name) is not None:
            raise ValueError(f"{name} is not a camera key of shmcam: {instead}")
    parsed["source_type"] = kind
    parsed["source"] = _source(config, kind)
    parsed["camera_calibration"] = _calibration(config.get("camera_calibration"))
    return parsed


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _source(config: dict, kind: str):
    source, form = config.get("source"), SOURCE_FORMS[kind]
    if kind == "script" and config.get("class") is None and not is_file_name(source):
        raise ValueError(f"class (or source) must be {SCRIPT_NAME}, got {_shown(source)}")
    if form is None:
        if source is not None and not isinstance(source, str):
            raise ValueError(f"source must be a string, got {_shown(source)}")
        return source
    valid = _text(source) and (
        _stream_address(source)
        if kind in STREAM_ADDRESS_TYPES
        else all(source.rpartition(":")[::2])
        if kind == "hdf5"
        else "://" not in source
    )
    if not valid:
        raise ValueError(f"source must be {form} (source_type {kind}), got {_shown(source)}")
    return source


def _calibration(calibration) -> dict | None:
    """The calibration with its defaults; an empty object gets them all (CamServer's rule)."""
    if calibration is None:
        return None
    if not isinstance(calibration, dict):
        raise ValueError(f"camera_calibration must be an object, got {_shown(calibration)}")
    merged = {**CALIBRATION, **{k: v for k, v in calibration.items() if v is not None}}
    marker = merged["reference_marker"]
    if not (
        isinstance(marker, list)
        and len(marker) == 4
        and all(map(_is_number, marker))
        and marker[0] != marker[2]
        and marker[1] != marker[3]
    ):
        raise ValueError(
            "camera_calibration.reference_marker must be [left, upper, right, lower] of a "
            f"marker of non-zero size, got {_shown(marker)}"
        )
    for name in ("reference_marker_width", "reference_marker_height"):
        if not _positive(merged[name]):
            raise ValueError(
                f"camera_calibration.{name} must be a positive number, got {_shown(merged[name])}"
            )
    for name in ("angle_horizontal", "angle_vertical"):
        if not _is_number(merged[name]):
            raise ValueError(f"camera_calibration.{name} must be a number, got {merged[name]!r}")
    return merged
