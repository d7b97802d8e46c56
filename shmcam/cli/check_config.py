"""`shmcam check-config`: validate a node's config directory before the supervisor reads it.

Checks shmcam.toml, every cameras/*.toml and pipelines/*.toml, and the configs saved through
REST in the data directory (cameras/*.json, pipelines/*.json) with the supervisor's own loader
and the validation REST applies, and what they refer to: the camera of each pipeline, the
pipeline config of each permanent instance, the backgrounds, uploaded functions and programs
in the data directory (or the node's function_dirs and executable_dirs), and where FILE mode
pipelines write and which dispatcher they ask (the node's file_dirs and dispatcher_urls).
Every problem is reported, one line each naming the file and the key; the exit status is 1 if
there is any, else 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from shmcam.coordinator import settings as cluster_settings
from shmcam.names import check_name as check_instance_id
from shmcam.supervisor import settings as node_settings
from shmcam.supervisor import validation
from shmcam.supervisor.errors import BadRequest, StorageError
from shmcam.supervisor.store import CONFIG_KINDS, ConfigStore, check_name, read_json, read_toml
from shmcam.workers import backgrounds
from shmcam.workers.pipeline_types import pipeline_type

SETTINGS_FILE = "shmcam.toml"
CLUSTER_FILE = "cluster.toml"  # the coordinator's, checked when present


def add_parser(commands) -> None:
    p = commands.add_parser(
        "check-config", help="validate a node's config directory", description=__doc__
    )
    p.add_argument(
        "config_dir",
        nargs="?",
        type=Path,
        metavar="DIR",
        default=node_settings.DEFAULT_CONFIG.parent,
        help=f"directory of {SETTINGS_FILE}, cameras/ and pipelines/ "
        f"(default {node_settings.DEFAULT_CONFIG.parent})",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DATA_DIR",
        help="data directory holding the backgrounds and scripts configs name "
        f"(default: data_dir of {SETTINGS_FILE})",
    )
    p.set_defaults(run=run)


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)  # how many of what were checked


@dataclass(frozen=True)
class Known:
    """What configs may refer to; None where the data directory cannot tell."""

    cameras: list[str]
    pipelines: list[str]
    scripts: list[str] | None
    backgrounds: set[str] | None
    backgrounds_dir: Path
    libs: list[str] | None = None
    function_dirs: tuple[Path, ...] = ()
    file_dirs: tuple[Path, ...] = ()
    dispatcher_urls: tuple[str, ...] = ()
    programs: list[str] | None = None
    executable_dirs: tuple[Path, ...] = ()


def check(config_dir: Path, data_dir: Path | None = None) -> Report:
    """Every problem of config_dir (and of its references into the data directory)."""
    report = Report()
    if not config_dir.is_dir():
        report.problems.append(f"{config_dir}: no such directory")
        return report
    settings = _settings(config_dir / SETTINGS_FILE, data_dir, report)
    if settings.config_dir.resolve() != config_dir.resolve():
        report.notes.append(
            f"the supervisor reads its cameras/ and pipelines/ from "
            f"config_dir {settings.config_dir}, not from {config_dir}"
        )
    if data_dir is not None and not data_dir.is_dir():
        report.problems.append(f"--data-dir {data_dir}: no such directory")
    files = {
        kind: _config_files(config_dir / subdir, report)
        + _config_files(settings.data_dir / subdir, report, ".json")
        for kind, subdir in CONFIG_KINDS.items()
    }
    known = replace(
        _known(ConfigStore(settings.data_dir, config_dir), files, report),
        function_dirs=settings.function_dirs,
        file_dirs=settings.file_dirs,
        dispatcher_urls=settings.dispatcher_urls,
        executable_dirs=settings.executable_dirs,
    )
    for kind, paths in files.items():
        for path in paths:
            report.problems += _config_problems(kind, path, known)
    report.problems += _permanent_problems(settings, config_dir / SETTINGS_FILE, known)
    report.checked = {
        **{f"{kind} config": len(paths) for kind, paths in files.items()},
        "permanent instance": len(settings.permanent),
    }
    if (config_dir / CLUSTER_FILE).is_file():
        report.problems += _cluster_problems(config_dir / CLUSTER_FILE)
        report.checked["cluster file"] = 1
    return report


def _cluster_problems(path: Path) -> list[str]:
    """The coordinator's cluster.toml, by its own loader; its permanent instances' configs
    against the cluster's store when that is readable here."""
    try:
        settings = cluster_settings.load(path)
    except cluster_settings.SettingsError as error:
        return [str(error)]
    problems = []
    for key in ("token_file", "node_token_file"):
        try:
            cluster_settings.read_token(getattr(settings, key), key)
        except cluster_settings.SettingsError as error:
            problems.append(f"{path}: {error}")
    if settings.data_dir.is_dir():
        store = ConfigStore(settings.data_dir)
        known = set(store.config_names("pipeline")) | set(store.config_names("camera"))
        for name, config in settings.permanent.items():
            if config.removeprefix("camera:") not in known:
                problems.append(
                    f"{path}: permanent {name!r}: no config {config!r} in the cluster's store "
                    f"{settings.data_dir}"
                )
    return problems


def _settings(path: Path, data_dir: Path | None, report: Report) -> node_settings.Settings:
    """The node settings; on a problem (reported) the defaults, so the other checks go on."""
    if not path.is_file():
        report.notes.append(f"no {path}: the supervisor runs with the default settings")
        return node_settings.load(None, data_dir=data_dir)
    try:
        settings = node_settings.load(path, data_dir=data_dir)
    except node_settings.SettingsError as error:
        report.problems.append(str(error))
        report.notes.append("the other checks used the default settings")
        return node_settings.load(None, data_dir=data_dir)
    try:
        node_settings.read_token(settings)
    except node_settings.SettingsError as error:
        report.problems.append(f"{path}: {error}")
    return settings


def _known(store: ConfigStore, files: dict[str, list[Path]], report: Report) -> Known:
    """Config names (saved and shipped), and the scripts and backgrounds if the data
    directory exists: a node that never ran has none, and checks that need them are skipped."""
    backgrounds_dir = store.data_dir / "backgrounds"
    if not store.data_dir.is_dir():
        report.notes.append(
            f"no data directory {store.data_dir}: backgrounds and uploaded "
            f"functions were not checked"
        )
    else:
        try:
            return Known(
                store.config_names("camera"),
                store.config_names("pipeline"),
                store.file_names("script"),
                set(store.background_ids()),
                backgrounds_dir,
                store.file_names("lib"),
                programs=store.file_names("program"),
            )
        except OSError as error:
            report.problems.append(f"data directory {store.data_dir}: {error}")
    return Known(
        *(sorted(path.stem for path in files[kind]) for kind in CONFIG_KINDS),
        None,
        None,
        backgrounds_dir,
    )


def _config_files(directory: Path, report: Report, suffix: str = ".toml") -> list[Path]:
    """The <name><suffix> files the supervisor reads; anything else there is reported, since
    the supervisor would silently ignore it. Dot files (editor and temp files) are skipped."""
    if not directory.is_dir():
        return []
    files = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith("."):
            continue
        if path.suffix != suffix or not path.is_file():
            report.problems.append(f"{path}: not a <name>{suffix} file; the supervisor ignores it")
            continue
        try:
            check_name(path.stem)
        except BadRequest as error:
            report.problems.append(f"{path}: {error}; the supervisor ignores this file")
            continue
        files.append(path)
    return files


def _config_problems(kind: str, path: Path, known: Known) -> list[str]:
    """The problems of one camera or pipeline config file."""
    try:
        config = (read_json if path.suffix == ".json" else read_toml)(path)
    except (BadRequest, StorageError, OSError) as error:
        return [str(error)]
    problems = []

    def attempt(check, *args) -> None:
        try:
            check(config, *args)
        except BadRequest as error:
            problems.append(f"{path}: {error}")

    if kind == "camera":
        attempt(lambda _: validation.camera_name(path.stem))
        attempt(validation.camera)
    else:
        attempt(validation.pipeline, known.cameras)
        attempt(validation.node_places, known.file_dirs, known.dispatcher_urls)
        if pipeline_type(config) == "external":
            if known.programs is not None:
                programs_dir = known.backgrounds_dir.parent / "programs"
                attempt(
                    validation.program_available,
                    known.programs,
                    programs_dir,
                    known.executable_dirs,
                )
        elif known.scripts is not None:
            attempt(validation.function_available, known.scripts, known.function_dirs, known.libs)
    background = config.get("image_background")
    if known.backgrounds is None or not background:
        return problems
    if background is True and kind == "camera":
        if not backgrounds.of_camera(known.backgrounds, path.stem):
            problems.append(
                f"{path}: camera config: image_background is true, but there is no "
                f"background of camera {path.stem} in {known.backgrounds_dir}"
            )
    elif isinstance(background, str) and background not in known.backgrounds:
        problems.append(
            f"{path}: {kind} config: image_background {background!r} is not a "
            f"stored background (none such in {known.backgrounds_dir})"
        )
    return problems


def _permanent_problems(settings: node_settings.Settings, path: Path, known: Known) -> list[str]:
    problems = []
    for instance_id, config_name in settings.permanent.items():
        where = f"{path}: permanent {instance_id!r}"
        try:
            check_instance_id(instance_id, "instance id")
        except ValueError as error:
            problems.append(f"{where}: {error} (instance ids name shared-memory segments)")
        if config_name not in known.pipelines:
            problems.append(
                f"{where}: no pipeline config named {config_name!r}; known "
                f"pipeline configs: {', '.join(known.pipelines) or 'none'}"
            )
    return problems


def summary(config_dir: Path, report: Report) -> str:
    if report.problems:
        return f"{config_dir}: {_count(len(report.problems), 'problem')}"
    checked = ", ".join(_count(count, what) for what, count in report.checked.items())
    return f"{config_dir}: OK ({checked})"


def _count(count: int, what: str) -> str:
    return f"{count} {what}{'s' * (count != 1)}"


def run(args) -> int:
    report = check(args.config_dir, args.data_dir)
    for line in [
        *report.problems,
        *(f"note: {note}" for note in report.notes),
        summary(args.config_dir, report),
    ]:
        print(line)
    return 1 if report.problems else 0
