"""The config store and safe array decoding, on real files in tmp_path (no mocks)."""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import shlex
import threading
from datetime import datetime

import numpy as np
import pytest

from shmcam.supervisor import arrays
from shmcam.supervisor import store as store_module
from shmcam.supervisor.errors import BadRequest, Conflict, NotFound, StorageError
from shmcam.supervisor.store import ConfigStore, check_file_name, check_name

CAM = {"name": "cam1", "source_type": "simulation", "size_x": 64, "mirror_x": False}
PIPE = {"camera_name": "cam1", "pipeline_type": "processing", "image_threshold": 2.5}


def tree(root) -> list[str]:
    """Every file and directory below root, relative, to prove what a call created."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def store(tmp_path):
    return ConfigStore(tmp_path / "data", tmp_path / "etc")


@pytest.fixture
def shipped(tmp_path):
    """etc/cameras/ with a valid and a broken shipped config."""
    cameras = tmp_path / "etc" / "cameras"
    cameras.mkdir(parents=True)
    (cameras / "simcam.toml").write_text(
        'source_type = "simulation"\nsize_x = 100\n'
        "[camera_calibration]\nreference_marker = [0, 0]\n"
    )
    (cameras / "broken.toml").write_text('source_type = "simulation\n')
    return cameras


# --- configs ---------------------------------------------------------------------------------


def test_config_round_trip_keeps_order_and_returns_fresh_copies(store, tmp_path):
    store.save_config("camera", "cam1", CAM)
    store.save_config("pipeline", "p:1", PIPE)
    got = store.get_config("camera", "cam1")
    assert got == CAM and list(got) == list(CAM)
    got["size_x"] = 1
    assert store.get_config("camera", "cam1")["size_x"] == 64
    assert store.get_config("pipeline", "p:1") == PIPE
    assert store.config_names("camera") == ["cam1"] and store.config_names("pipeline") == ["p:1"]
    assert json.loads((tmp_path / "data" / "cameras" / "cam1.json").read_text()) == CAM
    assert oct((tmp_path / "data" / "cameras").stat().st_mode & 0o777) == oct(0o755)


def test_missing_config_is_not_found(store):
    with pytest.raises(NotFound, match="no camera config named 'nope'"):
        store.get_config("camera", "nope")
    with pytest.raises(NotFound, match="nope"):
        store.delete_config("pipeline", "nope")
    with pytest.raises(BadRequest, match="unknown kind 'cameras'"):
        store.get_config("cameras", "x")


def test_overwrite_and_delete_keep_every_version_in_history(store):
    for size in (1, 2, 3):
        store.save_config("camera", "cam1", dict(CAM, size_x=size))
    stamps = store.config_history("camera", "cam1")
    assert [store.get_config_version("camera", "cam1", s)["size_x"] for s in stamps] == [1, 2]
    store.delete_config("camera", "cam1")
    stamps = store.config_history("camera", "cam1")
    assert [store.get_config_version("camera", "cam1", s)["size_x"] for s in stamps] == [1, 2, 3]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3
    assert store.config_names("camera") == []
    with pytest.raises(NotFound):
        store.get_config("camera", "cam1")
    with pytest.raises(NotFound, match="has no version"):
        store.get_config_version("camera", "cam1", "20000101T000000_000000Z")
    with pytest.raises(BadRequest, match="invalid version"):
        store.get_config_version("camera", "cam1", "../../cameras/x")


def test_history_keeps_only_the_newest_versions(tmp_path):
    store = ConfigStore(tmp_path / "data", history_limit=3)
    for size in range(6):
        store.save_config("camera", "cam1", dict(CAM, size_x=size))
    stamps = store.config_history("camera", "cam1")
    assert [store.get_config_version("camera", "cam1", s)["size_x"] for s in stamps] == [2, 3, 4]
    assert len(os.listdir(tmp_path / "data" / "history" / "cameras" / "cam1")) == 3


def test_concurrent_saves_lose_no_version(store):
    def save_many(worker):
        for i in range(10):
            store.save_config("pipeline", "p", dict(PIPE, worker=worker, i=i))

    threads = [threading.Thread(target=save_many, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.config_history("pipeline", "p")) == 39
    assert store.get_config("pipeline", "p")["i"] == 9


def test_shipped_config_is_visible_overridden_reverted_and_undeletable(store, shipped, tmp_path):
    assert store.config_names("camera") == ["broken", "simcam"]
    assert store.is_shipped("camera", "simcam") and not store.is_shipped("camera", "other")
    original = store.get_config("camera", "simcam")
    assert original == {
        "source_type": "simulation",
        "size_x": 100,
        "camera_calibration": {"reference_marker": [0, 0]},
    }
    store.save_config("camera", "simcam", dict(original, size_x=5))
    assert store.get_config("camera", "simcam")["size_x"] == 5
    assert store.config_names("camera") == ["broken", "simcam"]
    store.delete_config("camera", "simcam")
    assert store.get_config("camera", "simcam") == original
    with pytest.raises(Conflict, match=f"shipped in {shipped / 'simcam.toml'}"):
        store.delete_config("camera", "simcam")
    assert (shipped / "simcam.toml").is_file()
    assert len(store.config_history("camera", "simcam")) == 1


def test_broken_shipped_toml_is_listed_and_named_but_harms_nothing_else(store, shipped):
    with pytest.raises(StorageError, match=r"broken\.toml is not valid TOML: .*line 1"):
        store.get_config("camera", "broken")
    assert store.get_config("camera", "simcam")["size_x"] == 100
    store.save_config("camera", "broken", CAM)  # a saved override repairs it
    assert store.get_config("camera", "broken") == CAM


def test_shipped_toml_dates_are_refused_by_file_name(store, shipped):
    (shipped / "dated.toml").write_text("since = 2024-01-31\n")
    with pytest.raises(StorageError, match=r"dated\.toml is not JSON-serialisable.*date"):
        store.get_config("camera", "dated")


@pytest.mark.parametrize(
    "config, problem",
    [
        ({"a": {1, 2}}, "not JSON-serialisable: Object of type set"),
        ({"a": float("nan")}, "not JSON-serialisable: Out of range float"),
        ([1, 2], "must be a JSON object, got list"),
    ],
)
def test_a_failed_save_leaves_the_previous_file_and_no_temp_file(store, tmp_path, config, problem):
    store.save_config("camera", "cam1", CAM)
    before = tree(tmp_path)
    with pytest.raises(BadRequest, match=problem):
        store.save_config("camera", "cam1", config)
    assert tree(tmp_path) == before
    assert store.get_config("camera", "cam1") == CAM


def test_a_write_failing_midway_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "cameras" / "cam1.json"
    store_module._write_atomic(path, lambda file: file.write(b"old"))
    before = tree(tmp_path)

    def fail_halfway(file):
        file.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store_module._write_atomic(path, fail_halfway)
    assert tree(tmp_path) == before and path.read_bytes() == b"old"


# --- names -----------------------------------------------------------------------------------

BAD_NAMES = [
    "../x",
    "a/b",
    "..",
    ".hidden",
    "",
    "x" * 101,
    "a\x00b",
    "/etc/passwd",
    "-rf",
    "a..b",
    "a b",
    "a\nb",
    "cam\\x",
    5,
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_before_touching_anything(store, tmp_path, shipped, name):
    before = tree(tmp_path)
    calls = [
        lambda: store.get_config("camera", name),
        lambda: store.is_shipped("camera", name),
        lambda: store.save_config("camera", name, CAM),
        lambda: store.delete_config("pipeline", name),
        lambda: store.config_history("camera", name),
        lambda: store.get_config_version("camera", name, "20240101T000000_000000Z"),
        lambda: store.new_background_id(name),
        lambda: store.background_ids(name),
        lambda: store.save_background(name, np.ones(2)),
        lambda: store.get_background(name),
        lambda: store.latest_background(name),
        lambda: store.delete_background(name),
        lambda: store.save_file("script", name, b"x"),
        lambda: store.get_file("lib", name),
        lambda: store.delete_file("script", name),
    ]
    for call in calls:
        with pytest.raises(BadRequest, match="invalid name"):
            call()
    with pytest.raises(BadRequest, match="invalid name"):
        ConfigStore(tmp_path / "data").is_shipped("camera", name)  # no config_dir either
    assert tree(tmp_path) == before
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("name", ["cam1", "a:c+d_e-f", "X" * 100, "SARES20-CAMS142-M5"])
def test_good_names_pass(name):
    assert check_name(name) == name
    assert check_file_name(name) == name


def test_file_names_may_hold_dots_config_names_not():
    """A config name becomes an instance id and a segment name part: no dots (cam.1 would save
    and never start); scripts, libs and backgrounds keep their extensions."""
    assert check_file_name("script.py") == "script.py"
    with pytest.raises(BadRequest, match="invalid name 'cam.1'"):
        check_name("cam.1")


def test_long_names_are_shortened_in_the_message():
    with pytest.raises(BadRequest) as error:
        check_name("x" * 10_000)
    assert len(str(error.value)) < 300


def test_a_symlink_out_of_the_store_is_refused(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cameras").symlink_to(outside)
    with pytest.raises(StorageError, match="leads outside the data directory"):
        store.save_config("camera", "cam1", CAM)
    assert os.listdir(outside) == []


# --- backgrounds -----------------------------------------------------------------------------


def test_background_ids_are_camera_stamped_and_round_trip(store):
    background_id = store.new_background_id("cam1", datetime(2024, 1, 31, 8, 5, 3, 42))
    assert background_id == "cam1_20240131_080503_000042"
    assert store.new_background_id("cam1").startswith(f"cam1_{datetime.now():%Y%m%d}")
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    store.save_background(background_id, image)
    loaded = store.get_background(background_id)
    assert loaded.dtype == np.float32 and np.array_equal(loaded, image)
    store.delete_background(background_id)
    with pytest.raises(NotFound, match="no background 'cam1_20240131_080503_000042'"):
        store.get_background(background_id)
    with pytest.raises(NotFound):
        store.delete_background(background_id)
    with pytest.raises(BadRequest, match="invalid name"):
        store.new_background_id("c" * 80)  # the id would exceed 100 characters


def test_background_ids_sort_by_time_and_do_not_mix_prefixed_cameras(store):
    times = [datetime(2024, 3, 1, 12), datetime(2023, 12, 31, 23, 59), datetime(2024, 3, 1, 9)]
    for when in times:
        store.save_background(store.new_background_id("cam", when), np.zeros(2))
    cam_b = store.new_background_id("cam_b", datetime(2025, 1, 1))
    store.save_background(cam_b, np.zeros(2))
    store.save_background("my_reference", np.zeros(2))
    expected = [
        "cam_20231231_235900_000000",
        "cam_20240301_090000_000000",
        "cam_20240301_120000_000000",
    ]
    assert store.background_ids("cam") == expected
    assert store.background_ids("cam_b") == [cam_b]
    assert store.background_ids() == ["my_reference", *expected, cam_b]
    assert store.latest_background("cam") == expected[-1]
    with pytest.raises(NotFound, match="No background matches for the specified prefix 'ca'"):
        store.latest_background("ca")


# --- scripts and libs ------------------------------------------------------------------------


def test_scripts_keep_history_and_libs_round_trip(store, tmp_path):
    store.save_file("script", "fn.py", b"v1")
    store.save_file("script", "fn.py", b"v2")
    store.save_file("lib", "table.csv", b"1,2")
    store.save_file("lib", "table.csv", b"3,4")
    assert store.get_file("script", "fn.py") == b"v2" and store.get_file("lib", "table.csv")
    assert store.file_names("script") == ["fn.py"] and store.file_names("lib") == ["table.csv"]
    store.delete_file("script", "fn.py")
    history = tmp_path / "data" / "history" / "scripts" / "fn.py"
    assert sorted(p.read_bytes() for p in history.iterdir()) == [b"v1", b"v2"]
    assert not (tmp_path / "data" / "history" / "libs").exists()
    with pytest.raises(NotFound, match="no script named 'fn.py'"):
        store.get_file("script", "fn.py")
    with pytest.raises(BadRequest, match="must be bytes"):
        store.save_file("lib", "x", "text")


# --- safe arrays -----------------------------------------------------------------------------


def test_npy_round_trip():
    image = np.arange(20, dtype=">u2").reshape(4, 5)
    buffer = io.BytesIO()
    np.save(buffer, image, allow_pickle=False)
    loaded = arrays.load_array(buffer.getvalue())
    assert loaded.dtype == image.dtype and np.array_equal(loaded, image)


@pytest.mark.parametrize("protocol", range(6))
@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.uint16).reshape(3, 4),
        np.asfortranarray(np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)),
        np.zeros((0, 4), dtype=np.float32),
    ],
    ids=["uint16", "float32-fortran", "empty"],
)
def test_pickled_arrays_of_every_protocol_are_rebuilt(array, protocol):
    loaded = arrays.load_array(pickle.dumps(array, protocol=protocol))
    assert type(loaded) is np.ndarray and loaded.dtype == array.dtype
    assert np.array_equal(loaded, array) and loaded.flags.writeable


def test_numpy1_module_names_are_accepted():
    data = pickle.dumps(np.arange(3, dtype=np.int32), protocol=2)
    assert np.array_equal(arrays.load_array(data.replace(b"numpy._core", b"numpy.core")), [0, 1, 2])


@pytest.mark.parametrize(
    "value, reason",
    [
        ([1, 2], "decodes to list"),
        ({"a": 1}, "decodes to dict"),
        (np.float32(1), r"names numpy\._?core\.multiarray\.scalar"),
        (np.array([1, None], dtype=object), "not a plain numeric type"),
        (np.zeros(2, dtype=[("a", "<i4")]), "structured"),
        (np.ma.array([1, 2]), "names numpy.ma"),
    ],
)
@pytest.mark.parametrize("protocol", [2, 5])
def test_pickles_of_anything_but_plain_arrays_are_refused(value, reason, protocol):
    with pytest.raises(BadRequest, match=reason):
        arrays.load_array(pickle.dumps(value, protocol=protocol))


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_a_malicious_pickle_is_refused_without_running(tmp_path, protocol):
    marker = tmp_path / "pwned"
    with pytest.raises(BadRequest, match=r"refused: the upload is not a numpy array \(it names"):
        arrays.load_array(pickle.dumps(Exploit(marker), protocol=protocol))
    assert not marker.exists()
    pickle.loads(pickle.dumps(Exploit(marker), protocol=protocol))  # proof the payload works
    assert marker.exists()


U8_PICKLE_2 = pickle.dumps(np.arange(2, dtype=np.uint8), 2)
U8_PICKLE_3 = pickle.dumps(np.arange(4, dtype=np.uint8), 3)


@pytest.mark.parametrize(
    "forged, problem",
    [
        (b"cnumpy\nndarray\n(I1000000000000\ntR.", "TypeError"),  # ndarray(10**12) called
        (b"cnumpy._core.multiarray\n_reconstruct\n(I1\n(I0\ntVb\ntR.", "only plain numpy.ndarray"),
        (U8_PICKLE_2.replace(b"latin1", b"rot_13"), "encoding 'rot_13'"),
        (U8_PICKLE_3.replace(b"K\x04\x85", b"K\x09\x85"), "4 data bytes do not match shape"),
    ],
    ids=["ndarray-call", "other-subtype", "other-codec", "lying-shape"],
)
def test_forged_reconstruction_calls_are_refused(forged, problem):
    with pytest.raises(BadRequest, match=problem):
        arrays.load_array(forged)


def npy(shape: tuple, descr: str, data: bytes) -> bytes:
    """A .npy file with any header, to forge what a client could send."""
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


@pytest.mark.parametrize(
    "upload, problem",
    [
        (npy((10**13,), "|u1", b"1234"), "more than the limit"),
        (npy((9,), "|u1", b"1234"), "truncated"),
        (npy((2,), "|O", b"12345678" * 2), r"'\|O' is not a plain numeric type"),
        (npy((2,), [("a", "<i4")], b"12345678"), "not a plain numeric type"),
        (b"\x93NUMPY garbage", "bad .npy header"),
        (b"plain text", "not a numpy array"),
    ],
)
def test_bad_npy_is_refused_before_allocating(upload, problem):
    with pytest.raises(BadRequest, match=problem):
        arrays.load_array(upload)


def test_image_bytes_round_trip():
    image = np.arange(6, dtype=np.uint16).reshape(2, 3)
    payload = json.loads(json.dumps(arrays.image_bytes_payload(image.T)))
    assert payload["shape"] == [3, 2] and payload["dtype"] == "<u2"
    assert base64.b64decode(payload["bytes"]) == image.T.copy().tobytes()
    loaded = arrays.array_from_image_bytes(payload)
    assert loaded.dtype == np.uint16 and np.array_equal(loaded, image.T)
    uploaded = arrays.load_array(json.dumps(payload).encode())  # a PUT of what GET answered
    assert uploaded.dtype == np.uint16 and np.array_equal(uploaded, image.T)
    with pytest.raises(BadRequest, match="looks like JSON but is not"):
        arrays.load_array(b"{not json")


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"bytes": None}, "not valid base64"),
        ({"bytes": "***"}, "not valid base64"),
        ({"dtype": "|O"}, "not a plain numeric type"),
        ({"dtype": "|V8"}, "not a plain numeric"),
        ({"dtype": "nonsense"}, 'invalid "dtype"'),
        ({"dtype": 2}, "must be a string"),
        ({"shape": [2, 2]}, "do not match shape"),
        ({"shape": [-2, -3]}, "invalid array shape"),
        ({"shape": "2,3"}, "must be a list"),
        ({"shape": [10**6, 10**6]}, "more than the limit"),
    ],
)
def test_bad_image_bytes_are_refused(change, problem):
    payload = arrays.image_bytes_payload(np.zeros((2, 3), dtype=np.uint16))
    with pytest.raises(BadRequest, match=problem):
        arrays.array_from_image_bytes(dict(payload, **change))


@pytest.mark.parametrize("payload", [{"bytes": "AAAA"}, [1, 2], None])
def test_image_bytes_without_its_fields_is_refused(payload):
    with pytest.raises(BadRequest, match='needs a JSON object with "bytes"'):
        arrays.array_from_image_bytes(payload)


def test_a_config_above_the_size_limit_is_refused_before_it_is_saved(tmp_path):
    store = ConfigStore(tmp_path / "data", max_config_bytes=1000)
    with pytest.raises(BadRequest, match=r"more than the node's limit of 1000 \(max_config_kb\)"):
        store.save_config("camera", "big", {"source": "x" * 2000})
    assert store.config_names("camera") == []
