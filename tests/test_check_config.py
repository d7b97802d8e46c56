"""`shmcam check-config` as an operator runs it (a real subprocess), and the shipped etc/shmcam.

Each broken directory starts from a copy of the shipped one, so every test also shows that the
shipped files pass and that one change is enough to be caught, by a message naming the file.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from supervisor_harness import receive, wait_for

from shmcam.coordinator.settings import Settings as ClusterSettings
from shmcam.coordinator.settings import from_dict as cluster_from_dict
from shmcam.supervisor.settings import Settings, from_dict

SHIPPED = Path(__file__).resolve().parents[1] / "etc" / "shmcam"
# Keys whose default depends on the host or is unset: the file shows an example instead.
EXAMPLE_ONLY = {"node", "public_host", "token_file", "coordinator"}
DEFAULT_LINE = re.compile(r"# (\w+) = (.+)")


def check_config(*args: str) -> tuple[int, list[str]]:
    result = subprocess.run(
        [sys.executable, "-m", "shmcam.cli.main", "check-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout.splitlines()


@pytest.fixture
def etc(tmp_path) -> Path:
    """A copy of the shipped config directory, reading config_dir from itself."""
    copy = tmp_path / "etc"
    shutil.copytree(SHIPPED, copy)
    append(copy / "shmcam.toml", f'config_dir = "{copy}"')
    return copy


@pytest.fixture
def data(tmp_path) -> Path:
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + line + "\n")


def permanent_example() -> str:
    """The permanent instance shmcam.toml shows as an example (a comment)."""
    (line,) = [
        line
        for line in (SHIPPED / "shmcam.toml").read_text().splitlines()
        if line.startswith("# Example") and "permanent = " in line
    ]
    return line[line.index("permanent = ") :]


# --- the shipped directory ------------------------------------------------------------------


def test_shipped_directory_passes(data):
    code, out = check_config(str(SHIPPED), "--data-dir", str(data))
    cameras, pipelines = (
        len(list((SHIPPED / kind).glob("*.toml"))) for kind in ("cameras", "pipelines")
    )
    assert code == 0, out
    assert (
        out[-1] == f"{SHIPPED}: OK ({cameras} camera configs, {pipelines} pipeline config"
        f"{'s' * (pipelines != 1)}, 0 permanent instances, 1 cluster file)"
    )
    assert not [line for line in out if not line.startswith("note:")][:-1], out


def test_shipped_permanent_example_passes(etc, data):
    append(etc / "shmcam.toml", permanent_example())
    code, out = check_config(str(etc), "--data-dir", str(data))
    assert code == 0, out
    assert out == [
        f"{etc}: OK (2 camera configs, 1 pipeline config, 1 permanent instance, 1 cluster file)"
    ]


def test_shipped_examples_run(supervisor):
    """The simulation camera and its pipeline, kept running by the permanent example, give
    beam measurements on the pipeline's stream."""
    ((instance_id, name),) = tomllib.loads(permanent_example())["permanent"].items()
    pipeline = tomllib.loads((SHIPPED / "pipelines" / f"{name}.toml").read_text())
    camera_name = pipeline["camera_name"]
    camera = tomllib.loads((SHIPPED / "cameras" / f"{camera_name}.toml").read_text())
    sup = supervisor(
        cameras={camera_name: camera}, pipelines={name: pipeline}, permanent={instance_id: name}
    )

    def running():
        info = sup.call("GET", "/api/v1/pipeline/info")["info"]["active_instances"]
        return info.get(instance_id, {}).get("is_stream_active") and info[instance_id]

    instance = wait_for(running, timeout=60, what=f"permanent instance {instance_id}")
    assert instance["permanent"] and instance["camera_name"] == camera_name
    data = receive(instance["stream_address"], timeout=30)[0].data
    assert data["width"] == camera["size_x"]
    assert abs(data["x_center_of_mass"] - camera["size_x"] / 2) < camera["size_x"] / 5


def test_settings_file_documents_every_key_with_its_default():
    """Every Settings key appears once, commented, after a line saying what it is for; its
    value is the real default, except for host-dependent or unset ones."""
    lines = (SHIPPED / "shmcam.toml").read_text().splitlines()
    keyed = [(i, DEFAULT_LINE.fullmatch(line)) for i, line in enumerate(lines)]
    keyed = [(i, match) for i, match in keyed if match]
    documented = tomllib.loads("\n".join(f"{m[1]} = {m[2]}" for _, m in keyed))
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    assert [m[1] for _, m in keyed] == list(fields), "one line per key, in the class's order"
    defaults = Settings()
    for i, match in keyed:
        name, explanation = match[1], lines[i - 1]
        assert explanation.startswith("# ") and not DEFAULT_LINE.fullmatch(explanation)
        if name in EXAMPLE_ONLY:
            assert "Default:" in explanation, name
            assert (
                fields[name].default is None
                or fields[name].default_factory is not dataclasses.MISSING
            ), name
        else:
            assert getattr(from_dict({name: documented[name]}), name) == getattr(defaults, name), (
                name
            )
    from_dict(documented)  # the examples are valid values too


def test_cluster_file_documents_every_key_with_its_default():
    """The coordinator's cluster.toml, as shmcam.toml: every key once, after a line saying
    what it is for, with its real default; the node and permanent tables as examples."""
    lines = (SHIPPED / "cluster.toml").read_text().splitlines()
    keyed = [(i, DEFAULT_LINE.fullmatch(line)) for i, line in enumerate(lines)]
    keyed = [(i, m) for i, m in keyed if m and not lines[i - 1].startswith("# [")]
    keyed = [
        (i, m) for i, m in keyed if m[1] in {f.name for f in dataclasses.fields(ClusterSettings)}
    ]
    fields = [
        f.name for f in dataclasses.fields(ClusterSettings) if f.name not in ("nodes", "permanent")
    ]
    assert [m[1] for _, m in keyed] == fields, "one line per key, in the class's order"
    documented = tomllib.loads("\n".join(f"{m[1]} = {m[2]}" for _, m in keyed))
    defaults = ClusterSettings()
    for i, match in keyed:
        name, explanation = match[1], lines[i - 1]
        assert explanation.startswith("# ") and not DEFAULT_LINE.fullmatch(explanation)
        if "Default:" not in explanation:
            value = getattr(cluster_from_dict({name: documented[name]}), name)
            assert value == getattr(defaults, name), name
    text = "\n".join(line.removeprefix("# ") for line in lines if line.startswith("# ["))
    assert "[nodes.sf-daq-1]" in text and "[permanent]" in text


# --- broken directories ---------------------------------------------------------------------


def _unknown_key(etc, data):
    append(etc / "shmcam.toml", "rest_prot = 8889")
    return f"{etc}/shmcam.toml: unknown key 'rest_prot'"


def _bad_value(etc, data):
    append(etc / "shmcam.toml", "ring_slots = 1")
    return f"{etc}/shmcam.toml: ring_slots must be an integer from 2 to 4096, got 1"


def _missing_token_file(etc, data):
    append(etc / "shmcam.toml", f'token_file = "{data}/token"')
    return f"{etc}/shmcam.toml: token_file {data}/token: No such file or directory"


def _toml_syntax(etc, data):
    (etc / "cameras" / "cam1.toml").write_text('source_type = "simulation\n')
    return f"{etc}/cameras/cam1.toml is not valid TOML"


def _camera_rule(etc, data):
    (etc / "cameras" / "cam1.toml").write_text('source_type = "simulaton"\n')
    return f"{etc}/cameras/cam1.toml: camera config: source_type must be one of"


def _bad_file_name(etc, data):
    (etc / "cameras" / "cam 1.toml").write_text('source_type = "simulation"\n')
    return f"{etc}/cameras/cam 1.toml: invalid name 'cam 1'"


def _reserved_camera_name(etc, data):
    (etc / "cameras" / "heartbeat.toml").write_text('source_type = "simulation"\n')
    return f"{etc}/cameras/heartbeat.toml: camera name 'heartbeat' is taken by the REST API"


def _stray_file(etc, data):
    (etc / "pipelines" / "beam.json").write_text("{}\n")
    return f"{etc}/pipelines/beam.json: not a <name>.toml file; the supervisor ignores it"


def _pipeline_camera(etc, data):
    (etc / "pipelines" / "beam.toml").write_text('camera_name = "nocam"\n')
    return f"{etc}/pipelines/beam.toml: pipeline config: camera_name 'nocam' is not a camera"


def _pipeline_rule(etc, data):
    (etc / "pipelines" / "beam.toml").write_text(
        'camera_name = "simulation"\nimage_slices = { orientation = "diagonal" }\n'
    )
    return f"{etc}/pipelines/beam.toml: pipeline config: image_slices.orientation must be"


def _function(etc, data):
    (etc / "pipelines" / "beam.toml").write_text(
        'camera_name = "simulation"\nfunction = "my_function"\n'
    )
    return f"{etc}/pipelines/beam.toml: pipeline config: function 'my_function' is neither built in"


def _program(etc, data):
    (etc / "pipelines" / "proj.toml").write_text(
        'pipeline_type = "external"\nexecutable = "/usr/bin/env"\n'
    )
    return (
        f"{etc}/pipelines/proj.toml: pipeline config: executable '/usr/bin/env' is outside "
        f"the folders this node runs executables from by path (none: the node's "
        f"executable_dirs setting is empty)"
    )


def _background(etc, data):
    (etc / "pipelines" / "beam.toml").write_text(
        'camera_name = "simulation"\nimage_background_enable = true\n'
        'image_background = "simulation_20240131_120000_000000"\n'
    )
    return (
        f"{etc}/pipelines/beam.toml: pipeline config: image_background "
        f"'simulation_20240131_120000_000000' is not a stored background"
    )


def _camera_background(etc, data):
    append(etc / "cameras" / "simulation.toml", 'image_background = "dark"')
    return (
        f"{etc}/cameras/simulation.toml: camera config: image_background 'dark' is not a "
        f"stored background"
    )


def _file_outside(etc, data):
    (etc / "pipelines" / "beam.toml").write_text(
        'camera_name = "simulation"\nmode = "FILE"\nfile = "/sf/data/beam.h5"\n'
    )
    return (
        f"{etc}/pipelines/beam.toml: pipeline config: file '/sf/data/beam.h5' is not inside "
        f"the node's file_dirs (none)"
    )


def _old_store(etc, data):
    (etc / "pipelines" / "beam.toml").write_text(
        'camera_name = "simulation"\npipeline_type = "store"\noutput_file = "b.h5"\n'
    )
    return f"{etc}/pipelines/beam.toml: pipeline config: output_file was the former store"


def _dispatcher(etc, data):
    (etc / "pipelines" / "beam.toml").write_text(
        'pipeline_type = "stream"\nbsread_channels = ["A"]\n'
        'dispatcher_url = "http://dispatcher.local"\n'
    )
    return (
        f"{etc}/pipelines/beam.toml: pipeline config: dispatcher_url 'http://dispatcher.local' "
        f"is not one of the node's dispatcher_urls"
    )


def _permanent_config(etc, data):
    append(etc / "shmcam.toml", 'permanent = { beam = "no_such_pipeline" }')
    return f"{etc}/shmcam.toml: permanent 'beam': no pipeline config named 'no_such_pipeline'"


def _permanent_id(etc, data):
    append(etc / "shmcam.toml", 'permanent = { "beam.1" = "simulation_sp" }')
    return f"{etc}/shmcam.toml: permanent 'beam.1': invalid instance id 'beam.1'"


def _cluster_key(etc, data):
    append(etc / "cluster.toml", "node_timeot = 3")
    return f"{etc}/cluster.toml: unknown key 'node_timeot'"


def _cluster_node(etc, data):
    append(etc / "cluster.toml", '[nodes.a]\nurl = "a:8888"')
    return f"{etc}/cluster.toml: nodes.a: url must be the node's http://host:port, got 'a:8888'"


BROKEN = [
    _cluster_key,
    _cluster_node,
    _unknown_key,
    _bad_value,
    _missing_token_file,
    _toml_syntax,
    _camera_rule,
    _bad_file_name,
    _reserved_camera_name,
    _stray_file,
    _pipeline_camera,
    _pipeline_rule,
    _function,
    _program,
    _background,
    _camera_background,
    _file_outside,
    _old_store,
    _dispatcher,
    _permanent_config,
    _permanent_id,
]


@pytest.mark.parametrize("break_it", BROKEN, ids=[f.__name__[1:] for f in BROKEN])
def test_a_broken_directory_fails_naming_file_and_key(etc, data, break_it):
    expected = break_it(etc, data)
    code, out = check_config(str(etc), "--data-dir", str(data))
    assert code == 1, out
    assert [line for line in out if line.startswith(expected)], (expected, out)
    assert out[-1] == f"{etc}: 1 problem"


def test_every_problem_is_reported_not_just_the_first(etc, data):
    expected = [
        fault(etc, data) for fault in (_unknown_key, _toml_syntax, _function, _camera_background)
    ]
    code, out = check_config(str(etc), "--data-dir", str(data))
    assert code == 1
    for line in expected:
        assert [got for got in out if got.startswith(line)], (line, out)
    assert out[-1] == f"{etc}: 4 problems"


def test_uploaded_function_background_and_saved_camera_satisfy_references(etc, data):
    """What configs name may live in the data directory: scripts, backgrounds and cameras
    saved through REST."""
    (data / "scripts").mkdir()
    (data / "scripts" / "my_function.py").write_text(
        "def process_image(image, *args):\n    return {}\n"
    )
    (data / "backgrounds").mkdir()
    np.save(data / "backgrounds" / "dark.npy", np.zeros((4, 4)))
    (data / "cameras").mkdir()
    (data / "cameras" / "saved_cam.json").write_text('{"source_type": "simulation"}\n')
    (etc / "pipelines" / "beam.toml").write_text(
        'camera_name = "saved_cam"\nfunction = "my_function"\nimage_background = "dark"\n'
    )
    append(etc / "shmcam.toml", 'permanent = { beam = "beam" }')
    code, out = check_config(str(etc), "--data-dir", str(data))
    assert code == 0, out
    assert out == [
        f"{etc}: OK (3 camera configs, 2 pipeline configs, 1 permanent instance, 1 cluster file)"
    ]


def test_configs_saved_in_the_data_directory_are_checked_as_rest_checks_them(etc, data):
    """Saved configs follow the rules of REST: a bsread camera given a stream address (shmcam's
    old meaning, now bschannel's), a fanin without the address it binds, and a background that
    is not there."""
    (data / "cameras").mkdir()
    (data / "pipelines").mkdir()
    (data / "cameras" / "old.json").write_text(
        '{"source_type": "bsread", "source": "tcp://daq:9000"}'
    )
    (data / "cameras" / "bg.json").write_text('{"source": "CAM-BG", "image_background": true}')
    (data / "cameras" / "ok.json").write_text(
        '{"source_type": "bschannel", "source": "tcp://daq:9000", "mode": "PULL"}'
    )
    (data / "pipelines" / "fan.json").write_text('{"pipeline_type": "fanin"}')
    (data / "pipelines" / "notes.txt").write_text("a stray file")
    code, out = check_config(str(etc), "--data-dir", str(data))
    assert code == 1
    problems = "\n".join(out)
    assert f"{data}/cameras/old.json: camera config: source must be the camera's PV prefix" in (
        problems
    )
    assert f"{data}/cameras/bg.json: camera config: image_background is true, but there is no" in (
        problems
    )
    assert f"{data}/pipelines/fan.json: pipeline config: a fanin needs input_stream" in problems
    assert f"{data}/pipelines/notes.txt: not a <name>.json file" in problems
    assert "ok.json" not in problems
    assert out[-1] == f"{etc}: 4 problems"


def test_without_a_data_directory_its_checks_are_skipped_and_said_so(etc, tmp_path):
    missing = tmp_path / "never_started"
    append(etc / "shmcam.toml", f'data_dir = "{missing}"')
    _function(etc, None)
    code, out = check_config(str(etc))
    assert code == 0, out
    assert (
        f"note: no data directory {missing}: backgrounds and uploaded functions were not "
        f"checked" in out
    )


def test_missing_directories_fail(tmp_path, etc):
    code, out = check_config(str(tmp_path / "nowhere"))
    assert (code, out) == (
        1,
        [f"{tmp_path}/nowhere: no such directory", f"{tmp_path}/nowhere: 1 problem"],
    )
    code, out = check_config(str(etc), "--data-dir", str(tmp_path / "nodata"))
    assert code == 1
    assert f"--data-dir {tmp_path}/nodata: no such directory" in out


def test_help_describes_the_command():
    result = subprocess.run(
        [sys.executable, "-m", "shmcam.cli.main", "check-config", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "usage: shmcam check-config" in result.stdout and "--data-dir" in result.stdout
