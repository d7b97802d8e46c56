"""Validation of camera and pipeline configs before anything is saved or started.

Each check names the key and says what is expected, so a REST client sees a 400 it can act on.
Unknown keys pass through (CamServer configs carry many), but a known key must make sense.
"""

from __future__ import annotations

import math
import os
import re
from numbers import Real

import numpy as np

from shmcam.names import FILE_NAME_RULE, NAME_RULE, is_file_name, is_name
from shmcam.processing import config as processing
from shmcam.processing import functions
from shmcam.processing.functions import BUILTIN, allowed_path, is_path, script_names
from shmcam.sources import config as camera_config
from shmcam.workers import pipeline_keys, split, store_path
from shmcam.workers.pipeline_types import PIPELINE_TYPES, pipeline_type, program_output

from .errors import BadRequest

# What each pipeline type runs, for messages.
SERVES = {
    "processing": "an image function (process_image)",
    "stream": "a stream function (process(data, pulse_id, timestamp, parameters))",
    "custom": "a generator (generate(parameters)) or CamServer's process(parameters, init)",
    "store": "no function (it forwards its camera's image to the DataBuffer)",
    "fanout": "no function (it passes frames on to its workers)",
    "fanin": "no function (it passes its workers' results on)",
}
# Keys of a bsread input: they name a stream pipeline's input, or data joined to a processing
# pipeline's frames (none for store and custom pipelines).
BSREAD_INPUT_KEYS = ("bsread_address", "bsread_channels")
SECOND_STREAM_KEYS = ("input_stream2", "input_pipeline2", "bsread_address2", "bsread_channels2")
# An external pipeline's program: what it runs, with what, and what it sends (docs/external.md).
# They cannot change on a running instance (the program was started with them).
PROGRAM_KEYS = ("executable", "args", "env", "output")
PROGRAM_OUTPUTS = ("ring", "stream", "none")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXECUTABLE_MAGIC = (b"\x7fELF", b"#!")
SCRIPT_TYPE = (
    "pipeline_type 'script' is not supported: a pipeline_script's run(stop_event, "
    "statistics, parameter_queue, ...) drives CamServer's own receive and send loop through "
    "its internals (cam_client, background_manager, mflow senders), which shmcam does not "
    "have. Port it to a custom pipeline (generate(parameters), or CamServer's "
    "process(parameters, init)), a stream pipeline (process(data, pulse_id, timestamp, "
    "parameters)) or an external pipeline (any executable)"
)
SUB_DICTS = ("image_good_region", "image_slices")


def _fail(kind: str, key: str, expected: str, value) -> BadRequest:
    return BadRequest(f"{kind} config: {key} must be {expected}, got {value!r}")


def _number(kind, config, key, positive=True, integer=False, allow_zero=False):
    value = config.get(key)
    if value is None:
        return
    ok_type = isinstance(value, int) if integer else isinstance(value, Real)
    if (
        isinstance(value, bool)
        or not ok_type
        or not math.isfinite(value)
        or (positive and not (value > 0 or (allow_zero and value == 0)))
    ):
        what = "an integer" if integer else "a number"
        raise _fail(kind, key, f"{'a positive ' + what[3:] if positive else what}", value)


def _file_names(kind, config, key, expected):
    """A list of store file names (files that cannot leave their folder)."""
    value = config.get(key)
    if value is not None and not (isinstance(value, list) and all(map(is_file_name, value))):
        raise _fail(kind, key, f"{expected} ({FILE_NAME_RULE})", value)


def _choice(kind, config, key, choices, default=None):
    value = config.get(key, default)
    if value is not None and value not in choices:
        raise _fail(kind, key, f"one of {', '.join(map(str, choices))}", value)


# Names the /api/v1/cam routes take for themselves: GET /api/v1/cam/<name> could not reach a
# camera so named.
RESERVED_CAMERA_NAMES = ("aliases", "groups", "heartbeat", "info", "script", "version")


def camera_name(name: str) -> None:
    if name in RESERVED_CAMERA_NAMES:
        raise BadRequest(
            f"camera name {name!r} is taken by the REST API "
            f"(/api/v1/cam/{name}); choose another name"
        )


def camera(config) -> dict:
    """The config as given, if sources/config.py's parser (the camera's own) accepts it."""
    try:
        camera_config.parse(config)
    except ValueError as error:
        raise BadRequest(f"camera config: {error}") from None
    return config


MAX_FRAME_RATE = 1000.0  # Hz: beyond any camera of a 100 Hz machine


def camera_limits(config: dict, max_frame_bytes: int) -> None:
    """What a camera config may ask of the node: frames of at most max_frame_bytes (the
    node's max_frame_mb), at most MAX_FRAME_RATE frames a second."""
    for key in ("frame_rate", "max_frame_rate"):
        value = config.get(key)
        if isinstance(value, Real) and value > MAX_FRAME_RATE:
            raise _fail("camera", key, f"at most {MAX_FRAME_RATE:g} frames/s", value)
    size_x, size_y = config.get("size_x"), config.get("size_y")
    if isinstance(size_x, int) and isinstance(size_y, int):
        try:
            itemsize = np.dtype(config.get("dtype") or "uint16").itemsize
        except Exception:
            itemsize = 8
        if size_x * size_y * itemsize > max_frame_bytes:
            raise BadRequest(
                f"camera config: a {size_x}x{size_y} frame of {itemsize}-byte pixels takes "
                f"{size_x * size_y * itemsize / 2**20:.0f} MB, more than the node's limit of "
                f"{max_frame_bytes / 2**20:.0f} MB (max_frame_mb)"
            )


def upload(kind: str, name: str, data: bytes, data_dir) -> None:
    """Code must load before it is stored: a pipeline script as processing/functions.py
    checks it (Python compiled, C built, neither run), a camera script compiled as Python, a
    program is something the kernel can run (an ELF binary, or a script with its #! line)."""
    if kind == "script":
        try:
            functions.check(name, data, data_dir / "scripts")
        except ValueError as error:
            raise BadRequest(f"{error}; nothing was stored") from None
    elif kind == "program":
        if not bytes(data[:4]).startswith(_EXECUTABLE_MAGIC):
            raise BadRequest(
                f"program {name} is neither an ELF executable nor a script starting with "
                f"'#!' (its interpreter); nothing was stored"
            )
    elif kind == "camera_script":
        try:
            compile(data, name, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as error:
            raise BadRequest(
                f"camera script {name} is not valid Python: {error}; nothing was stored"
            ) from None


def runs_code(config) -> str | None:
    """What in a pipeline config makes the node start a program, or None."""
    if isinstance(config, dict) and config.get("pipeline_type") == "external":
        return "a pipeline that starts an external program"
    return None


def program_available(config: dict, programs: list[str], programs_dir, executable_dirs) -> str:
    """The file an external pipeline runs: an uploaded program (`executable` a name), or a
    path inside the node's executable_dirs; executable either way."""
    name = config["executable"]
    if is_path(name):
        try:
            path = allowed_path(name, executable_dirs, "executable", "executable_dirs")
        except ValueError as error:
            raise BadRequest(f"pipeline config: {error}") from None
        run = name  # as given: a symlinked interpreter finds its environment by its own name
    elif name in programs:
        path = run = os.path.join(programs_dir, name)
    else:
        raise BadRequest(
            f"pipeline config: executable {name!r} is neither an uploaded program "
            f"(PUT /api/v1/pipeline/program/<name>/program_bytes) nor an absolute path in "
            f"the node's executable_dirs"
        )
    if not os.access(path, os.X_OK):
        raise BadRequest(f"pipeline config: executable {name!r} is not executable")
    return run


def function_available(
    config: dict, scripts: list[str], function_dirs=(), libs: list[str] | None = None
) -> None:
    """The config's function is built in, uploaded (`<name>`, `<name>.c`, `<name>.so`,
    `<name>.py`) or a file inside the node's function_dirs, and the `libs` it names are
    uploaded (checked without importing user code). libs None: not checked."""
    name = config.get("function")
    if isinstance(name, str) and name and is_path(name):
        try:
            allowed_path(name, function_dirs)
        except ValueError as error:
            raise BadRequest(f"pipeline config: {error}") from None
    elif isinstance(name, str) and name and name not in BUILTIN and not script_names(name, scripts):
        raise BadRequest(
            f"pipeline config: function {name!r} is neither built in "
            f"({', '.join(BUILTIN)}) nor an uploaded script; upload it first "
            f"(PUT /api/v1/pipeline/script/<name>/script_bytes, <name> ending "
            f"in .py, .c or .so)"
        )
    missing = [lib for lib in config.get("libs") or () if libs is not None and lib not in libs]
    if missing:
        raise BadRequest(
            f"pipeline config: libs {', '.join(map(repr, missing))} not uploaded; upload "
            f"them first (PUT /api/v1/pipeline/lib/<name>/lib_bytes)"
        )


def stream_unchanged(config: dict, update: dict) -> None:
    """An update may not change what a running instance set up at its start: its input,
    its output, its workers."""
    changed = pipeline_keys.fixed_changes(config, update)
    if changed:
        raise BadRequest(
            f"{', '.join(changed)} cannot change on a running instance (its input and "
            f"output are set up at start); start a new instance instead"
        )
    try:
        unchanged = split.parse(config) == split.parse(merge(config, update))
    except ValueError:
        return  # the validation of the new config says why
    if not unchanged:
        raise BadRequest(
            f"{', '.join(k for k in split.KEYS if k in update)} cannot change on a running "
            f"instance (its workers are set up at start); start a new instance instead"
        )


def node_places(config: dict, file_dirs=(), dispatcher_urls=()) -> None:
    """What a config names on the node: its FILE mode file (in the node's store or its
    file_dirs) and its dispatcher (one of the node's dispatcher_urls)."""
    keys = pipeline_keys.file(config)
    if keys is not None:
        try:
            store_path.check_file(keys.file, file_dirs)
        except ValueError as error:
            raise BadRequest(f"pipeline config: {error}") from None
    for source in (pipeline_keys.bsread_source(config), _second_source(config)):
        if (
            source is not None
            and source.channels
            and source.dispatcher_url not in {str(url).rstrip("/") for url in dispatcher_urls}
        ):
            raise BadRequest(
                f"pipeline config: dispatcher_url {source.dispatcher_url!r} is not one of the "
                f"node's dispatcher_urls ({', '.join(map(str, dispatcher_urls)) or 'none'}); "
                f"give bsread_address instead, or ask for it in the node settings"
            )


def _second_source(config: dict):
    merge = pipeline_keys.merge(config)
    return merge.source if merge else None


def pipeline(config, camera_names) -> dict:
    if not isinstance(config, dict):
        raise BadRequest(f"a pipeline config must be a JSON object, got {type(config).__name__}")
    if config.get("pipeline_type") == "script" or config.get("pipeline_script") is not None:
        raise BadRequest(f"pipeline config: {SCRIPT_TYPE}")
    _choice("pipeline", config, "pipeline_type", PIPELINE_TYPES, "processing")
    _fan(config)
    _pipeline_input(config, camera_names)
    if pipeline_type(config) == "external":
        _program(config)
    try:  # CamServer's pipeline keys, by the parser the instance itself runs from
        pipeline_keys.parse(config)
    except ValueError as error:
        raise BadRequest(f"pipeline config: {error}") from None
    _number("pipeline", config, "no_client_timeout", positive=False)
    _port("pipeline", config)
    _file_names("pipeline", config, "libs", "a list of uploaded lib names")
    if config.get("copy") is not None and not isinstance(config["copy"], bool):
        raise _fail("pipeline", "copy", "true or false", config["copy"])
    if config.get("prefix") is not None and not isinstance(config["prefix"], str):
        raise _fail("pipeline", "prefix", "a string (the channel name prefix)", config["prefix"])
    function = config.get("function")
    if function is not None and not isinstance(function, str):
        raise _fail("pipeline", "function", "a function or script name", function)
    if pipeline_type(config) == "external":
        return config  # its other keys are the program's parameters
    try:  # the processing keys, by the parsers the pipeline itself runs from
        processing.parse(config)
        split.parse(config)
    except ValueError as error:
        raise BadRequest(f"pipeline config: {error}") from None
    return config


def _fan(config: dict) -> None:
    """Fan-out and fan-in (CamServer's wiring): a fanin binds its input_stream, which the
    workers' output_pipeline (or output_stream) connect to."""
    kind = pipeline_type(config)
    if kind in ("fanout", "fanin") and config.get("function"):
        raise BadRequest(f"pipeline config: a {kind} pipeline runs {SERVES[kind]}; remove function")
    if kind == "fanin" and not config.get("input_stream"):
        raise BadRequest(
            "pipeline config: a fanin needs input_stream, the address its PULL socket binds "
            "(tcp://<this node>:<port>), which its workers' output_pipeline connects to"
        )
    if kind == "fanin" and (config.get("input_mode") or "PULL") != "PULL":
        raise _fail(
            "pipeline", "input_mode", "PULL (a fanin binds a PULL socket)", config["input_mode"]
        )
    _number("pipeline", config, "pid_buffer", integer=True, allow_zero=True)


def _program(config: dict) -> None:
    """An external pipeline's program: never a shell string, but a file and its arguments."""
    executable = config.get("executable")
    if not isinstance(executable, str) or not (
        is_file_name(executable) or (is_path(executable) and "\0" not in executable)
    ):
        raise _fail(
            "pipeline",
            "executable",
            f"an uploaded program's name ({FILE_NAME_RULE}) or an absolute path in the "
            f"node's executable_dirs",
            executable,
        )
    args = config.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) and "\0" not in a for a in args):
        raise _fail("pipeline", "args", "a list of strings (the program's arguments)", args)
    env = config.get("env", {})
    if not isinstance(env, dict) or not all(
        _ENV_NAME.fullmatch(k) and isinstance(v, str) and "\0" not in v for k, v in env.items()
    ):
        raise _fail("pipeline", "env", "an object of variable names to strings", env)
    taken = [k for k in env if k.startswith("SHMCAM_")]
    if taken:
        raise BadRequest(
            f"pipeline config: env {', '.join(taken)}: SHMCAM_ variables are the contract "
            f"shmcam sets (docs/external.md)"
        )
    _choice("pipeline", config, "output", PROGRAM_OUTPUTS)
    if config.get("mode") == "FILE" and program_output(config) != "ring":
        raise BadRequest(
            "pipeline config: mode FILE writes what the program writes to its output ring; "
            'it needs "output": "ring"'
        )


def program_unchanged(config: dict, update: dict) -> None:
    changed = [k for k in PROGRAM_KEYS if k in update and update[k] != config.get(k)]
    if changed and pipeline_type(config) == "external":
        raise BadRequest(
            f"{', '.join(changed)} cannot change on a running instance (its program was "
            f"started with them); start a new instance instead"
        )


def _pipeline_input(config: dict, camera_names) -> None:
    """What the pipeline reads: a camera of this node, a stream, an upstream pipeline, bsread
    channels (a stream pipeline) or, for custom pipelines, nothing (they generate their
    frames)."""
    kind = pipeline_type(config)
    for key in ("input_stream", "input_stream2"):
        value = config.get(key)
        if value is not None and (not isinstance(value, str) or "://" not in value):
            raise _fail("pipeline", key, "a stream address such as tcp://host:9000", value)
    _choice("pipeline", config, "input_mode", ("SUB", "PULL"))
    upstream = config.get("input_pipeline")
    if upstream is not None:
        if not is_name(upstream):
            raise _fail("pipeline", "input_pipeline", f"a pipeline name ({NAME_RULE})", upstream)
        if config.get("input_stream"):
            raise BadRequest("pipeline config: give input_pipeline or input_stream, not both")
    if kind == "store":
        _store(config)
    bsread = [key for key in BSREAD_INPUT_KEYS if config.get(key)]
    streamed = config.get("input_stream") or upstream or (kind == "stream" and bsread)
    second = [key for key in SECOND_STREAM_KEYS if config.get(key)]
    if second and not streamed and kind != "stream":
        raise BadRequest(
            f"pipeline config: {second[0]} is merged into an input stream; "
            f"give input_stream or input_pipeline too"
        )
    if bsread and kind == "stream" and (config.get("input_stream") or upstream):
        raise BadRequest(
            f"pipeline config: give input_stream (or input_pipeline) or {bsread[0]}, not both: "
            f"a stream pipeline reads one stream (merge a second with bsread_address2)"
        )
    if bsread and kind in ("store", "custom"):
        raise BadRequest(
            f"pipeline config: {bsread[0]} names bsread data for a processing pipeline (joined "
            f"by pulse id) or a stream pipeline's input; a {kind} pipeline reads none"
        )
    if kind == "external":
        _external_input(config, camera_names)
        return
    builtin = BUILTIN.get(config.get("function"))
    if builtin is not None and builtin.kind != kind:
        raise BadRequest(
            f"pipeline config: {config['function']!r} is a built-in {builtin.kind} function; "
            f"a {kind} pipeline runs {SERVES[kind]}"
        )
    if kind == "custom":
        if not config.get("function"):
            raise BadRequest(
                "pipeline config: a custom pipeline needs a function (an uploaded script "
                "defining generate(parameters), or CamServer's process(parameters, init))"
            )
        return
    name = config.get("camera_name")
    if streamed and name is None:
        return
    if not isinstance(name, str) or not name:
        raise BadRequest(
            "Camera name not specified in configuration. pipeline config: camera_name is "
            "required (the camera to process), unless input_stream, input_pipeline or (a "
            "stream pipeline) bsread_address or bsread_channels names what to read"
        )
    _known_camera(name, camera_names)


def _known_camera(name: str, camera_names) -> None:
    if name not in camera_names:
        raise BadRequest(
            f"pipeline config: camera_name {name!r} is not a camera of this node; "
            f"known cameras: {', '.join(sorted(camera_names)) or 'none'}"
        )


def _external_input(config: dict, camera_names) -> None:
    """A program reads one input (a camera, a stream, an upstream pipeline) or none."""
    other = [key for key in (*SECOND_STREAM_KEYS, *BSREAD_INPUT_KEYS) if config.get(key)]
    if other:
        raise BadRequest(
            f"pipeline config: an external program reads one input (camera_name, "
            f"input_stream or input_pipeline); {other[0]} is not supported there (read or "
            f"merge further streams in the program)"
        )
    name = config.get("camera_name")
    if name is not None and not (config.get("input_stream") or config.get("input_pipeline")):
        _known_camera(name, camera_names)


def _store(config: dict) -> None:
    """CamServer's DataBuffer feed forwards its camera's image and nothing else."""
    for key in ("function", "input_stream", "input_pipeline", *SECOND_STREAM_KEYS):
        if config.get(key) is not None:
            raise BadRequest(
                f"pipeline config: {key}: a store pipeline (CamServer's DataBuffer feed) "
                f"forwards its camera's image as <camera>:FPICTURE, unprocessed; use a "
                f'processing or stream pipeline (with "mode": "PUSH" or "FILE")'
            )


def _port(kind, config):
    port = config.get("port")
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
    ):
        raise _fail(kind, "port", "a TCP port number", port)


# What CamServer's PipelineConfig.expand_config fills in for a processing pipeline (a null
# value never overrides a default), so that clients reading a config find every key.
PROCESSING_DEFAULTS = {
    "image_background_enable": False,
    "image_background": None,
    "image_threshold": None,
    "image_region_of_interest": None,
    "image_good_region": None,
    "image_slices": None,
}


def expanded_pipeline(config: dict) -> dict:
    """A pipeline config as CamServer answers it: its type, and for processing pipelines the
    processing keys with their defaults (and the defaults inside good region and slices)."""
    kind = pipeline_type(config)
    expanded = {"pipeline_type": kind, **config}
    if kind != "processing":
        return expanded
    for key, default in PROCESSING_DEFAULTS.items():
        if expanded.get(key) is None:
            expanded[key] = default
    for key, defaults in (
        ("image_good_region", processing.GOOD_REGION),
        ("image_slices", processing.SLICES),
    ):
        section = expanded[key]
        if isinstance(section, dict):
            expanded[key] = {**defaults, **{k: v for k, v in section.items() if v is not None}}
    return expanded


def expanded_camera(config: dict) -> dict:
    """A camera config as CamServer answers it: every key of its source type, with defaults."""
    try:
        return camera_config.parse(config)
    except ValueError as error:
        raise BadRequest(f"camera config: {error}") from None


def merge(config: dict, update: dict) -> dict:
    """A live update merged over a config; the sub-dicts of processing merge key by key."""
    merged = {**config, **update}
    for key in SUB_DICTS:
        if isinstance(config.get(key), dict) and isinstance(update.get(key), dict):
            merged[key] = {**config[key], **update[key]}
    return merged
