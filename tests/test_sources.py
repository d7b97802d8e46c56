"""Camera sources end to end: real camera instances, real Channel Access IOCs on 127.0.0.1,
real bsread streams, HDF5 files and camera scripts; what arrives is read from the ring."""

from __future__ import annotations

import threading
import time

import h5py
import numpy as np
import pytest
from ioc import frame
from supervisor_harness import receive, wait_for

from shmcam.bsread import Sender
from shmcam.shm import RingReader, ring_base
from shmcam.sources.transforms import axis_arrays


def frames(reader: RingReader, count: int, timeout: float = 10.0) -> list:
    """count frames as (pulse_id, timestamp, copy of the image, axes, generation)."""
    out = []
    while len(out) < count:
        item = reader.wait(timeout)
        assert item is not None, "the ring went silent"
        got = (item.pulse_id, item.timestamp, item.image.copy(), item.axes, reader.generation)
        if reader.validate(item):
            out.append(got)
    return out


def until_shape(reader: RingReader, shape, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = frames(reader, 1)[0]
        if got[2].shape == shape:
            return got
    raise AssertionError(f"no frame of shape {shape}")


def assert_ioc_frame(image: np.ndarray, n: int | None = None) -> None:
    """The pixels of the IOC's frame n (n taken from the first pixel if not given)."""
    n = int(image.flat[0]) if n is None else n
    assert np.array_equal(image.ravel(), frame(n, image.shape[1], image.shape[0]))


def test_epics_camera_resize_wrong_sizes_and_ioc_restart(iocs, cameras):
    ioc = iocs("epics")
    camera = cameras({"source_type": "epics", "source": "TST"}, ioc.env)
    assert camera.wait_state(True) == "connected"
    reader = camera.reader()
    try:
        first = frames(reader, 5)
        for _pulse_id, (sec, _), image, axes, _ in first:
            assert image.shape == (960, 1280) and image.dtype == np.uint16
            assert_ioc_frame(image)
            assert abs(sec - time.time()) < 10 and axes == (0.0, 1.0, 0.0, 1.0)
        pulse_ids = [f[0] for f in first]
        assert pulse_ids == sorted(set(pulse_ids))

        ioc.command("size 640 480")
        _, _, image, _, generation = until_shape(reader, (480, 640))
        assert_ioc_frame(image)
        assert generation > first[-1][4]  # the reader followed a new generation

        ioc.command("lie 800 600")  # 640x480 frames announced as 800x600
        wait_for(lambda: camera.counters()["errors"] >= 3, what="wrong-size frames counted")
        written = camera.counters()["frames_out"]
        assert reader.wait(0.3) is None and camera.counters()["frames_out"] == written
        ioc.command("size 640 480")
        assert_ioc_frame(frames(reader, 1)[0][2])

        before = frames(reader, 1)[0][0]
        ioc.kill()
        assert "not connected: TST:FPICTURE" in camera.wait_state(False)
        ioc.start()
        assert camera.wait_state(True) == "connected"
        pulse_id, _, image, _, _ = until_shape(reader, (960, 1280))  # the IOC's start size
        assert_ioc_frame(image)
        assert pulse_id > before  # the counter survived the reconnect
        assert camera.process.poll() is None
    finally:
        reader.close()


def test_area_detector_pulse_ids_state_and_restart_through_the_supervisor(
    supervisor, iocs, monkeypatch, node
):
    ioc = iocs("area_detector")
    for key, value in ioc.env.items():
        monkeypatch.setenv(key, value)  # the supervisor passes its environment on
    sup = supervisor(
        cameras={"ad": {"source_type": "area_detector", "source": "TST", "no_client_timeout": 0}}
    )
    sup.call("GET", "/api/v1/cam/ad")  # starts the camera

    def online():
        return sup.call("GET", "/api/v1/cam/ad/is_online")

    wait_for(lambda: online()["online"], what="the camera online")
    reader = RingReader(ring_base(node, "ad"), timeout=10)
    try:
        got = frames(reader, 10)
        for pulse_id, _, image, _, _ in got:
            assert image.shape == (960, 1280)
            assert_ioc_frame(image, pulse_id)  # the pulse id is the frame's UniqueId
        assert np.diff([g[0] for g in got]).min() >= 1

        ioc.command("size 1024 768")
        pulse_id, _, image, _, _ = until_shape(reader, (768, 1024))
        assert_ioc_frame(image, pulse_id)

        ioc.command("acquire 0")
        wait_for(lambda: "not acquiring" in online()["status"], what="the stop reported")
        assert online()["online"] is False
        ioc.command("acquire 1")
        wait_for(lambda: online()["online"], what="acquiring again")

        ioc.restart()
        pulse_id, _, image, _, _ = until_shape(reader, (960, 1280))
        assert_ioc_frame(image, pulse_id)
        assert pulse_id < 100  # the new IOC counts from 1
        assert sup.call("GET", "/api/v1/cam/ad/is_online")["online"] is True
        logs = "\n".join(sup.log_lines("ad"))
        assert "Camera with prefix TST is offline (not connected: TST:image1" in logs
    finally:
        reader.close()


def bsread_sender(sender: Sender, stop: threading.Event, size=(48, 32)) -> None:
    """Frames p = 0, 1, ...: 2-D with axes (even p), flat with width and height (odd p), and
    every 10th announced with the wrong width."""
    width, height = size
    x_axis, y_axis = axis_arrays(width, height, (5.0, -0.5, 0.0, 2.0))
    p = 0
    while not stop.is_set():
        image = np.full((height, width), p % 60000, np.uint16)
        data = {"width": width + (p % 10 == 9), "height": height}
        if p % 2:
            data["image"] = image.ravel()
        else:
            data.update(image=image, x_axis=x_axis, y_axis=y_axis)
        sender.send(data, 1000 + p, (1_700_000_000 + p, p))
        p += 1
        time.sleep(0.01)


@pytest.mark.parametrize("modes", [("PUB", "SUB"), ("PUSH", "PULL")])
def test_bsread_source_keeps_pulse_ids_timestamps_and_axes(cameras, modes):
    stop = threading.Event()
    sender = Sender("tcp://127.0.0.1:0", mode=modes[0], queue_size=10)
    thread = threading.Thread(target=bsread_sender, args=(sender, stop))
    thread.start()
    try:
        camera = cameras(
            {
                "source_type": "bschannel",
                "source": sender.address,
                "mode": modes[1],
                "timeout": 500,
            }
        )
        reader = camera.reader()
        try:
            got = frames(reader, 20)
        finally:
            reader.close()
    finally:
        stop.set()
        thread.join()
        sender.close()
    for pulse_id, timestamp, image, axes, _ in got:
        p = pulse_id - 1000
        assert p % 10 != 9 and timestamp == (1_700_000_000 + p, p)
        assert image.shape == (32, 48) and (image == p).all()
        assert axes == ((5.0, -0.5, 0.0, 2.0) if p % 2 == 0 else (0.0, 1.0, 0.0, 1.0))
    wait_for(lambda: camera.counters()["errors"] >= 2, what="wrong-size frames counted")
    assert "no message from" in camera.wait_state(False)  # the sender is gone


def test_hdf5_replay_loops_at_frame_rate_with_transforms_background_and_axes(cameras, tmp_path):
    recorded = np.arange(5, dtype=np.uint16)[:, None, None] * 100 + np.arange(
        48, dtype=np.uint16
    ).reshape(6, 8)
    with h5py.File(tmp_path / "run.h5", "w") as f:
        f["/data/images"] = recorded
    (tmp_path / "backgrounds").mkdir()
    np.save(tmp_path / "backgrounds" / "bg1.npy", np.full((3, 4), 10, np.uint16))
    calibration = {
        "reference_marker": [0, 0, 4, 2],
        "reference_marker_width": 2.0,
        "reference_marker_height": 1.0,
    }
    config = {
        "source_type": "hdf5",
        "source": f"{tmp_path / 'run.h5'}:/data/images",
        "frame_rate": 40,
        "mirror_x": True,
        "rotate": 1,
        "roi": [2, 4, 1, 3],
        "image_background": "bg1",
        "camera_calibration": calibration,
    }
    camera = cameras(config)
    reader = camera.reader()
    try:
        start = time.monotonic()
        got = frames(reader, 21)
        elapsed = time.monotonic() - start
    finally:
        reader.close()
    assert 20 / 1.6 / 40 < elapsed < 20 * 1.6 / 40, f"20 frames at 40 Hz took {elapsed:.2f} s"

    def expected(k):  # mirror_x, rotate, roi rows 1..3 and columns 2..5, background 10
        return np.clip(np.rot90(recorded[k][:, ::-1])[1:4, 2:6].astype(int) - 10, 0, None)

    k0 = next(k for k in range(5) if np.array_equal(got[0][2], expected(k)))
    for i, (_, _, image, axes, _) in enumerate(got):
        assert np.array_equal(image, expected((k0 + i) % 5)), i  # looping, in order
        # marker origin (2, 1), pixels 0.5 x 0.5; the roi starts at (2, 1): x0 = y0 = 0
        assert axes == (0.0, -0.5, 0.0, -0.5)
    assert [g[0] for g in got] == sorted({g[0] for g in got})
    message = receive(f"tcp://127.0.0.1:{camera.spec['port']}")[0]
    assert message.data["x_axis"].tolist() == [0.0, -0.5, -1.0, -1.5]
    assert message.data["y_axis"].tolist() == [0.0, -0.5, -1.0]
    assert message.data["image"].shape == (3, 4)


CAMERA_SCRIPT = b'''
import numpy as np

class Source:
    """Frames numbered from 1; read() fails once, at frame 4."""
    def __init__(self, config):
        self.n = 0
        self.fail_at = config["fail_at"]
        self.reason = "scripted"

    def read(self, timeout):
        self.n += 1
        if self.n == self.fail_at:
            raise RuntimeError("sensor unplugged")
        return np.full((4, 6), self.n, np.uint8), 7000 + self.n
'''


def test_script_source_and_a_failing_source_retried_with_backoff(cameras, tmp_path):
    (tmp_path / "camera_scripts").mkdir()
    (tmp_path / "camera_scripts" / "counter").write_bytes(CAMERA_SCRIPT)
    camera = cameras(
        {
            "source_type": "script",
            "source": "counter",
            "frame_rate": 50,
            "fail_at": 4,
            "abort_on_error": False,
        }
    )
    reader = camera.reader()
    try:
        got = frames(reader, 5)
    finally:
        reader.close()
    for pulse_id, _, image, _, _ in got:
        assert image.dtype == np.uint8 and image.shape == (4, 6)
        assert pulse_id == 7000 + int(image[0, 0])
    assert (False, "RuntimeError: sensor unplugged") in camera.states
    assert camera.states[-1] == (True, "scripted")  # created again, frames from 1 again
    assert any("source failed (RuntimeError: sensor unplugged)" in line for line in camera.log)
