"""CamServer's pipeline keys (docs/spec/camserver.md §3.1), parsed with CamServer's defaults.

One parser for the supervisor's validation and for the instance, as processing/config.py is
for the processing keys: a config the supervisor accepts is one the instance runs as it was
read. Each group of keys has its own frozen dataclass and parse function (output, file, flow,
errors and timeouts, bsread inputs), so that each part of the pipeline reads only its own.
Errors are ValueErrors that name the key and say what is expected; a null value never
overrides a default. Pure Python: the supervisor imports this without h5py or numba.

Former keys that shmcam refuses (400) are in REFUSED, with what to do instead. The parallel
keys (processing_threads, ...) and the processing keys (image_*, ...) are parsed elsewhere.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from shmcam.bsread.compression import BITSHUFFLE_LZ4, LZ4, codec_name
from shmcam.bsread.encoder import CREATE_HEADER
from shmcam.names import NAME_RULE, is_name

from .pipeline_types import pipeline_type, pushes

MODES = ("PUB", "PUSH", "FILE")
RECEIVE_MODES = ("SUB", "PULL")
LAYOUTS = ("DEFAULT", "FLAT", "BSH5", "SHMCAM")
# CamServer's defaults and bounds (config.py there)
QUEUE_SIZE = 10
MAX_QUEUE_SIZE = 100_000
MAX_BUFFER_SIZE = 10_000
STREAM_TIMEOUT = 10.0
CAMERA_TIMEOUT = 10.0
RECEIVE_TIMEOUT_MS = 1000
MAX_RECEIVE_TIMEOUT_MS = 60_000
IMAGE_BUF, MAX_IMAGE_BUF = 1000, 5000  # bsread_image_buf
DATA_BUF, MAX_DATA_BUF = 1000, 10_000  # bsread_data_buf
MERGE_QUEUE_SIZE = MERGE_BUFFER_SIZE = 100
MAX_MERGE = 100_000
NOTIFY_ON_ERROR_SUFFIXES = ("_sp",)  # CamServer's NOTIFY_ON_ERROR: ScreenPanel's instances
#: bsread's DEFAULT_DISPATCHER_URL, CamServer's default for dispatcher_url
DISPATCHER_URL = "https://dispatcher-api.psi.ch/sf-databuffer"
MIN_FREE_MB = 512.0  # a FILE run ends cleanly when less is left on its disk

#: Keys a config may not carry any more, with what to do instead.
REFUSED = {
    "output_file": (
        "output_file was the former store pipeline's; a pipeline writes HDF5 with "
        '"mode": "FILE" and "file" (docs/files.md)'
    ),
}


@dataclass(frozen=True)
class OutputKeys:
    """Where results go and how they are sent (fixed at start, except include/exclude and
    the allow_* keys)."""

    mode: str  # PUB, PUSH or FILE
    queue_size: int
    block: bool
    buffer_size: int | None  # a send thread holding this many messages
    connect: str | None  # output_stream (output_pipeline resolved into it): connect, not bind
    compression: str
    header_compression: str
    create_header: str  # on_change, always or once
    allow_type_changes: bool
    allow_shape_changes: bool
    include: tuple[str, ...] | None
    exclude: tuple[str, ...] | None


@dataclass(frozen=True)
class FileKeys:
    """FILE mode: the HDF5 file (§10.3)."""

    file: str
    layout: str  # DEFAULT, FLAT, BSH5 (CamServer's) or SHMCAM (shmcam's own)
    localtime: bool  # per-channel timestamps
    change: bool  # a changed shape opens data<k+1>/header<k+1> instead of ending the run
    records: int | None  # fixed dataset size
    min_free_mb: float


@dataclass(frozen=True)
class FlowKeys:
    """Which frames are processed, and when a run ends."""

    pause: bool
    downsampling: int  # 1 of N
    max_frame_rate: float | None
    pid_start: int | None  # <= 0: nothing passes
    pid_stop: int | None  # None (or <= 0 given): no end
    records: int | None
    enforce_pid: bool
    enforce_timestamp: bool
    check_timestamp: bool


@dataclass(frozen=True)
class ErrorKeys:
    """What a failing frame or a silent input does to the instance."""

    abort_on_error: bool
    notify_on_error: bool
    abort_on_timeout: bool
    stream_timeout: float
    camera_timeout: float | None  # None: no reconnection
    receive_timeout: float  # seconds
    debug: bool


@dataclass(frozen=True)
class BsreadSource:
    """A bsread stream to read: an address, or channels the dispatcher streams."""

    address: str | None
    channels: tuple | None  # names, or {"name", "modulo", "offset"} dicts
    mode: str
    dispatcher_url: str
    verify: bool
    disable_compression: bool


@dataclass(frozen=True)
class JoinKeys:
    """bsread data joined to a processing pipeline's frames by pulse id."""

    source: BsreadSource
    image_buf: int
    data_buf: int


@dataclass(frozen=True)
class MergeKeys:
    """A second stream merged into a stream pipeline's input by pulse id."""

    source: BsreadSource | None  # bsread_address2 / bsread_channels2; None: input_*2
    mode: str  # of input_stream2 / input_pipeline2
    queue_size: int
    buffer_size: int


# --- checks ----------------------------------------------------------------------------------


def _fail(key: str, expected: str, value) -> ValueError:
    return ValueError(f"{key} must be {expected}, got {value!r}")


def _get(config: dict, key: str, check, expected: str, default=None):
    value = config.get(key)
    if value is None:
        return default
    if not check(value):
        raise _fail(key, expected, value)
    return value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _flag(config: dict, key: str, default: bool) -> bool:
    return _get(config, key, lambda v: isinstance(v, bool), "true or false", default)


def _positive_int(config: dict, key: str, default=None, limit: int | None = None):
    expected = "a positive integer" + (f" up to {limit}" if limit else "")
    return _get(
        config,
        key,
        lambda v: _is_int(v) and v > 0 and (limit is None or v <= limit),
        expected,
        default,
    )


def _seconds(config: dict, key: str, default: float) -> float:
    return float(_get(config, key, lambda v: _is_number(v) and v > 0, "seconds (> 0)", default))


def _choice(config: dict, key: str, choices, default: str, fold: bool = False) -> str:
    """One of choices (any case if `fold`, as CamServer reads `layout`)."""
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, str) and fold:
        value = value.upper()
    if value not in choices:
        raise _fail(key, f"one of {', '.join(choices)}", config[key])
    return value


def _address(config: dict, key: str) -> str | None:
    return _get(
        config,
        key,
        lambda v: isinstance(v, str) and "://" in v and len(v) <= 1024,
        "a stream address such as tcp://host:9000",
    )


def _names(config: dict, key: str) -> tuple[str, ...] | None:
    value = _get(
        config,
        key,
        lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
        "a list of channel names",
    )
    return None if value is None else tuple(value)


def _compression(config: dict, key: str) -> str:
    try:
        return codec_name(config.get(key))
    except ValueError:
        raise _fail(key, "true, false, 'lz4' or 'bitshuffle_lz4'", config[key]) from None


# --- the groups ------------------------------------------------------------------------------


def output(config: dict) -> OutputKeys:
    store = pipeline_type(config) == "store"
    mode = _choice(config, "mode", MODES, "PUSH" if pushes(config) else "PUB")
    if store and mode != "PUSH":
        raise ValueError(
            f"mode {config['mode']!r}: a store pipeline is CamServer's DataBuffer feed, a PUSH "
            f'stream; to write HDF5, give a processing or stream pipeline "mode": "FILE"'
        )
    block = _flag(config, "block", not store)
    if store and block:
        raise ValueError("block: a store pipeline (DataBuffer feed) never blocks; leave it out")
    connect = _address(config, "output_stream")
    upstream = config.get("output_pipeline")
    if upstream is not None:
        if not is_name(upstream):
            raise _fail("output_pipeline", f"a pipeline name ({NAME_RULE})", upstream)
        if connect:
            raise ValueError("give output_pipeline or output_stream, not both")
    if mode == "FILE" and (connect or upstream):
        raise ValueError("output_stream and output_pipeline are for PUB and PUSH, not FILE mode")
    create_header = config.get("create_header")
    if isinstance(create_header, bool):  # CamServer's booleans
        create_header = "always" if create_header else "once"
    if create_header is not None and create_header not in CREATE_HEADER:
        raise _fail(
            "create_header", f"one of {', '.join(CREATE_HEADER)}, true or false", create_header
        )
    compression = _compression(config, "data_compression")
    if mode == "FILE" and compression == LZ4:
        raise ValueError(
            "data_compression 'lz4' has no HDF5 chunk format shmcam writes; in FILE mode use "
            "true or 'bitshuffle_lz4' (images stored with the bitshuffle filter) or none"
        )
    return OutputKeys(
        mode=mode,
        queue_size=_positive_int(config, "queue_size", QUEUE_SIZE, MAX_QUEUE_SIZE),
        block=block,
        buffer_size=_positive_int(config, "buffer_size", None, MAX_BUFFER_SIZE),
        connect=connect,
        compression=compression,
        header_compression=_compression(config, "data_header_compression"),
        create_header=create_header or "on_change",
        allow_type_changes=_flag(config, "allow_type_changes", True),
        allow_shape_changes=_flag(config, "allow_shape_changes", True),
        include=_names(config, "include"),
        exclude=_names(config, "exclude"),
    )


def file(config: dict) -> FileKeys | None:
    """The FILE mode keys, or None for a stream output. The file name's rule is
    store_path.py's (it needs the node's directories)."""
    if output(config).mode != "FILE":
        return None
    name = config.get("file")
    if not isinstance(name, str) or not name:
        raise ValueError(
            f'File name not defined: "mode": "FILE" needs "file", a file name in the node\'s '
            f"store or an absolute path in its file_dirs, got {name!r}"
        )
    layout = _choice(config, "layout", LAYOUTS, "DEFAULT", fold=True)
    localtime, change = _flag(config, "localtime", True), _flag(config, "change", False)
    if change and layout in ("BSH5", "SHMCAM"):
        raise ValueError(
            f"change: layout {layout} keeps one dataset per channel; a file that opens new "
            f"data groups on a change is DEFAULT or FLAT"
        )
    if not localtime and layout == "SHMCAM":
        raise ValueError("localtime: the SHMCAM layout always stores each channel's timestamp")
    return FileKeys(
        file=name,
        layout=layout,
        localtime=localtime,
        change=change,
        records=_positive_int(config, "records"),
        min_free_mb=float(
            _get(
                config, "min_free_mb", lambda v: _is_number(v) and v >= 0, "MB (>= 0)", MIN_FREE_MB
            )
        ),
    )


def _pid_range(config: dict) -> tuple[int | None, int | None]:
    value = _get(
        config,
        "pid_range",
        lambda v: isinstance(v, list) and len(v) == 2 and all(p is None or _is_int(p) for p in v),
        "[start, stop] pulse ids",
        [None, None],
    )
    start, stop = value
    return start, stop if stop is not None and stop > 0 else None


def flow(config: dict) -> FlowKeys:
    every = _get(config, "downsampling", lambda v: _is_int(v) and v >= 0, "an integer (>= 0)", 0)
    if pipeline_type(config) == "store":  # the DataBuffer feed's own spelling; CamServer's
        for key in ("modulo", "module"):  # code reads "module"
            every = _positive_int(config, key, every)
    else:
        for key in ("modulo", "module"):
            if config.get(key) is not None:
                raise ValueError(
                    f"{key} is the store pipeline's (DataBuffer feed); use downsampling here"
                )
    start, stop = _pid_range(config)
    return FlowKeys(
        pause=_flag(config, "pause", False),
        downsampling=max(1, every),
        max_frame_rate=_get(
            config, "max_frame_rate", lambda v: _is_number(v) and v > 0, "frames/s (> 0)"
        ),
        pid_start=start,
        pid_stop=stop,
        records=_positive_int(config, "records"),
        enforce_pid=_flag(config, "enforce_pid", False),
        enforce_timestamp=_flag(config, "enforce_timestamp", False),
        check_timestamp=_flag(config, "check_timestamp", False),
    )


def errors(config: dict, instance_id: str = "") -> ErrorKeys:
    """CamServer's defaults: a processing or custom pipeline stops on a failing frame, a
    stream pipeline goes on (CamServer's stream loop never stops on one); an instance named
    *_sp (ScreenPanel's) notifies instead of stopping."""
    camera_timeout = _get(
        config, "camera_timeout", _is_number, "seconds (<= 0: no reconnection)", CAMERA_TIMEOUT
    )
    _positive_int(config, "timeout_count")  # read by no CamServer pipeline either: no effect
    receive_ms = _get(
        config,
        "receive_timeout",
        lambda v: _is_number(v) and 0 < v <= MAX_RECEIVE_TIMEOUT_MS,
        f"milliseconds (> 0, up to {MAX_RECEIVE_TIMEOUT_MS})",
        RECEIVE_TIMEOUT_MS,
    )
    return ErrorKeys(
        abort_on_error=_flag(config, "abort_on_error", pipeline_type(config) != "stream"),
        notify_on_error=_flag(
            config, "notify_on_error", instance_id.endswith(NOTIFY_ON_ERROR_SUFFIXES)
        ),
        abort_on_timeout=_flag(config, "abort_on_timeout", False),
        stream_timeout=_seconds(config, "stream_timeout", STREAM_TIMEOUT),
        camera_timeout=float(camera_timeout) if camera_timeout > 0 else None,
        receive_timeout=receive_ms / 1000,
        debug=_flag(config, "debug", False),
    )


def _channels(config: dict, key: str) -> tuple | None:
    """CamServer's bsread_channels: a list (or its JSON text) of names or
    {"name", "modulo", "offset"}; empty means none."""
    value = config.get(key)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _fail(key, "a list of channel names (or its JSON text)", value) from None

    def channel(item) -> bool:
        if isinstance(item, str):
            return bool(item)
        return (
            isinstance(item, dict)
            and isinstance(item.get("name"), str)
            and item["name"]
            and set(item) <= {"name", "modulo", "offset"}
            and all(_is_int(item[k]) and item[k] >= 0 for k in ("modulo", "offset") if k in item)
        )

    if value is not None and not (isinstance(value, list) and all(map(channel, value))):
        raise _fail(key, 'a list of channel names or {"name", "modulo", "offset"}', value)
    return tuple(value) if value else None


def _bsread_source(config: dict, address_key: str, channels_key: str, mode: str | None):
    """A bsread source named by an address or by channels (the dispatcher), or None. The
    mode defaults as CamServer's: PULL from an address, SUB from the dispatcher."""
    address, channels = _address(config, address_key), _channels(config, channels_key)
    if address is None and channels is None:
        return None
    url = _get(
        config,
        "dispatcher_url",
        lambda v: isinstance(v, str) and v.startswith(("http://", "https://")),
        "an http(s) URL",
        DISPATCHER_URL,
    )
    return BsreadSource(
        address=address,
        channels=None if address else channels,
        mode=mode or ("PULL" if address else "SUB"),
        dispatcher_url=url.rstrip("/"),
        verify=_flag(config, "dispatcher_verify_request", True),
        disable_compression=_flag(config, "dispatcher_disable_compression", False),
    )


def bsread_source(config: dict) -> BsreadSource | None:
    """bsread_address / bsread_channels (+ bsread_mode)."""
    mode = config.get("bsread_mode")
    return _bsread_source(
        config,
        "bsread_address",
        "bsread_channels",
        None if mode is None else _choice(config, "bsread_mode", RECEIVE_MODES, "SUB"),
    )


def join(config: dict) -> JoinKeys | None:
    """A processing pipeline's bsread data, joined to its frames; None without."""
    if pipeline_type(config) != "processing":
        return None
    source = bsread_source(config)
    if source is None:
        return None
    return JoinKeys(
        source=source,
        image_buf=min(_positive_int(config, "bsread_image_buf", IMAGE_BUF), MAX_IMAGE_BUF),
        data_buf=min(_positive_int(config, "bsread_data_buf", DATA_BUF), MAX_DATA_BUF),
    )


def merge(config: dict) -> MergeKeys | None:
    """The second stream of a pipeline on a stream; None without."""
    mode2 = config.get("input_mode2")
    mode = _choice(config, "input_mode2", RECEIVE_MODES, "SUB")
    source = _bsread_source(
        config, "bsread_address2", "bsread_channels2", None if mode2 is None else mode
    )
    named = [k for k in ("input_stream2", "input_pipeline2") if config.get(k) is not None]
    _address(config, "input_stream2")
    upstream = config.get("input_pipeline2")
    if upstream is not None and not is_name(upstream):
        raise _fail("input_pipeline2", f"a pipeline name ({NAME_RULE})", upstream)
    if len(named) + (source is not None) > 1:
        raise ValueError(
            "give one second stream: input_stream2, input_pipeline2, bsread_address2 "
            "or bsread_channels2"
        )
    if not named and source is None:
        return None
    return MergeKeys(
        source=source,
        mode=mode,
        queue_size=_positive_int(config, "merge_queue_size", MERGE_QUEUE_SIZE, MAX_MERGE),
        buffer_size=_positive_int(config, "merge_buffer_size", MERGE_BUFFER_SIZE, MAX_MERGE),
    )


def parse(config: dict, instance_id: str = "") -> None:
    """Every group, for validation: ValueError naming the first bad key."""
    for key, why in REFUSED.items():
        if config.get(key) is not None:
            raise ValueError(why)
    _get(config, "min_free_mb", lambda v: _is_number(v) and v >= 0, "MB (>= 0)")
    output(config)
    file(config)
    flow(config)
    errors(config, instance_id)
    join(config)
    merge(config)
    _flag(config, "read_only", False)


def image_compressed(config: dict) -> bool:
    """FILE mode: images stored with the bitshuffle filter (data_compression)."""
    return output(config).compression == BITSHUFFLE_LZ4


# --- what cannot change on a running instance ------------------------------------------------

#: Keys a running instance reads once, at its start: its input and its output.
FIXED_KEYS = (
    "camera_name",
    "pipeline_type",
    "input_stream",
    "input_pipeline",
    "input_mode",
    "input_stream2",
    "input_pipeline2",
    "input_mode2",
    "bsread_address",
    "bsread_channels",
    "bsread_mode",
    "bsread_address2",
    "bsread_channels2",
    "bsread_image_buf",
    "bsread_data_buf",
    "dispatcher_url",
    "dispatcher_verify_request",
    "dispatcher_disable_compression",
    "merge_queue_size",
    "merge_buffer_size",
    "mode",
    "queue_size",
    "block",
    "buffer_size",
    "port",
    "output_stream",
    "output_pipeline",
    "pid_buffer",
    "data_compression",
    "data_header_compression",
    "create_header",
    "file",
    "layout",
    "localtime",
    "change",
)


def fixed_changes(config: dict, update: dict) -> list[str]:
    """The keys of `update` that would change what a running instance set up at its start
    (a null or a default equal to the value in force is no change). In FILE mode `records`
    is fixed too: the file's datasets have that size."""
    merged = {**config, **update}
    fixed = FIXED_KEYS + (("records",) if output(config).mode == "FILE" else ())
    changed = []
    for key in fixed:
        if key not in update:
            continue
        if _meaning(config, key) != _meaning(merged, key):
            changed.append(key)
    return changed


def _meaning(config: dict, key: str):
    """A key's value as the instance reads it (its default when missing or null)."""
    try:
        keys = output(config)
    except ValueError:
        return config.get(key)
    parsed = {
        "mode": keys.mode,
        "queue_size": keys.queue_size,
        "block": keys.block,
        "data_compression": keys.compression,
        "data_header_compression": keys.header_compression,
        "create_header": keys.create_header,
    }
    return parsed.get(key, config.get(key))
