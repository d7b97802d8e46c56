"""CamServer's camera configs (docs/spec/camserver.md §2) on real camera instances: each source
type fed by a real sender (caproto IOCs, redis-server, ZMQ senders of each format), and the
camera keys seen from the outside (ring, streams, statistics, reports)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq
from camera_harness import CameraProcess
from supervisor_harness import free_port_block, receive, wait_for
from worker_harness import WorkerProcess

from shmcam.bsread import Decoder, Receiver, Sender
from shmcam.shm import RingReader, ring_base, stats_name
from shmcam.sources.probe import is_online

REDIS_SERVER = "/usr/bin/redis-server"  # Debian's (make test installs it)


def frames(reader: RingReader, count: int, timeout: float = 10.0) -> list:
    """count frames as (pulse_id, timestamp, copy of the image)."""
    out = []
    while len(out) < count:
        item = reader.wait(timeout)
        assert item is not None, "the ring went silent"
        got = (item.pulse_id, item.timestamp, item.image.copy())
        if reader.validate(item):
            out.append(got)
    return out


def camera_frames(camera: CameraProcess, count: int) -> list:
    """count frames from a camera's ring, as frames() gives them."""
    reader = camera.reader()
    try:
        return frames(reader, count)
    finally:
        reader.close()


def swissfel_timestamp(pulse_id: int) -> tuple[int, int]:
    """A timestamp whose nanoseconds carry the pulse id (what check_timestamp checks)."""
    return 1_700_000_000 + pulse_id // 100, (pulse_id % 100) * 10_000_000 + pulse_id % 1_000_000


class Feeder:
    """Sends messages from a thread until stopped: `send(n)` makes the n-th message's parts."""

    def __init__(self, send, period: float = 0.01):
        self._send, self._period = send, period
        self._stop = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._send(self.sent)
            except (zmq.ZMQError, RuntimeError):  # its socket closed: the test is ending
                return
            self.sent += 1
            time.sleep(self._period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def feeders():
    started = []

    def start(send, period=0.01):
        feeder = Feeder(send, period)
        started.append(feeder)
        return feeder

    yield start
    for feeder in started:
        feeder.stop()


@pytest.fixture
def zmq_context():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def redis():
    """A real redis-server on a free loopback port; its address host:port."""
    port = free_port_block(1)
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: redis_cli(port, "PING") == "PONG", what="redis-server")
        yield f"127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait()


def redis_cli(port: int, *words: str) -> str | None:
    """One command with the test's own RESP writer (not shmcam's client under test)."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
            command = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
            connection.sendall(command.encode())
            return connection.recv(1024).decode().split("\r\n")[0].lstrip("+")
    except OSError:
        return None


# --- epics: online checks, waiting for a late IOC ------------------------------------------


def test_epics_probe_says_offline_not_initialized_and_online_in_camservers_words(iocs, tmp_path):
    ioc = iocs("epics", 64, 48, 10, start=False)
    env = {**os.environ, **ioc.env}
    config = {"name": "TST", "source": "TST"}  # CamServer's shape: epics by default

    def ask():
        return is_online_in(env, config)

    online, reason = ask()
    assert not online and reason.startswith("Camera with prefix TST is offline")
    ioc.start()
    assert ask() == (True, "connected")
    ioc.command("init NOTREADY")
    online, reason = ask()
    assert not online
    assert reason == "Camera with prefix TST is not initialized (TST:INIT is 'NOTREADY')"


def test_probe_of_streams_simulations_and_replays(tmp_path):
    assert is_online({"source_type": "simulation"}, "sim") == (True, "simulation cameras are "
                                                              "checked when they run")  # fmt: skip
    stream = {"source_type": "bschannel", "source": "tcp://127.0.0.1:1", "mode": "PULL"}
    assert is_online(stream, "bs")[0] is True  # not probed: a PULL would take frames
    online, reason = is_online({"source_type": "hdf5", "source": f"{tmp_path}/no.h5:/d"}, "r")
    assert not online and "No such file" in reason
    assert is_online({"source_type": "bsread", "source": "tcp://x:1"}, "x") == (
        False,
        "invalid camera config: source must be the camera's PV prefix (for a stream address "
        "use source_type bschannel) (source_type bsread), got 'tcp://x:1'",
    )


def is_online_in(env: dict, config: dict, **kwargs) -> tuple[bool, str]:
    """is_online with the IOC's CA environment (the supervisor passes its own on)."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return is_online(config, "cam", **kwargs)
    finally:
        os.environ.clear()
        os.environ.update(saved)


class PipelineProcess(WorkerProcess):
    """A pipeline instance reading a camera's ring, as the supervisor starts it."""

    def __init__(self, node: str, camera: str, data_dir, port: int):
        super().__init__(
            [sys.executable, "-m", "shmcam.workers", "pipeline"],
            {
                "node": node,
                "instance_id": f"{camera}_sp",
                "camera": camera,
                "ring": ring_base(node, camera),
                "preview": ring_base(node, f"{camera}_sp", "preview"),
                "ring_slots": 8,
                "stats": stats_name(node, f"p-{camera}_sp"),
                "port": port,
                "input": None,
                "scripts_dir": str(data_dir / "scripts"),
                "function_dirs": [],
                "camera_scripts_dir": str(data_dir / "camera_scripts"),
                "backgrounds_dir": str(data_dir / "backgrounds"),
                "store_dir": str(data_dir / "store"),
                "config": {"camera_name": camera, "no_client_timeout": 0},
            },
        )


def test_a_pipeline_of_an_epics_camera_whose_ioc_starts_late_and_restarts_gets_frames(
    iocs, cameras, node, tmp_path
):
    ioc = iocs("epics", 64, 48, 20, start=False)
    camera = cameras({"source": "TST"}, ioc.env)  # epics by default
    assert camera.wait_state(False).startswith("Camera with prefix TST is offline")
    pipeline = PipelineProcess(node, camera.spec["camera"], tmp_path, free_port_block(1))
    try:
        time.sleep(1.0)  # the camera waits: no ring, no frames, no failure
        assert camera.process.poll() is None and pipeline.process.poll() is None
        ioc.start()
        assert camera.wait_state(True) == "connected"
        pipeline.wait_report("ready", timeout=30)
        stream = f"tcp://127.0.0.1:{pipeline.spec['port']}"
        before = receive(stream, 3, timeout=10)
        assert all(m.data["width"] == 64 for m in before)
        ioc.restart()
        assert camera.wait_state(True) == "connected"
        after = receive(stream, 3, timeout=10)
        assert min(m.pulse_id for m in after) > max(m.pulse_id for m in before)
    finally:
        assert pipeline.stop() == 0, pipeline.log[-10:]


# --- bsread (CamServer's: EPICS camera, bsread frames) --------------------------------------


def bsread_frame(channel: str, width: int, height: int, pulse_id: int, flat: bool) -> dict:
    image = np.full((height, width), pulse_id % 60000, np.uint16)
    return {channel: image.ravel() if flat else image}


def test_bsread_camera_address_from_bsreadconfig_size_from_epics_and_pulse_checks(
    iocs, cameras, feeders
):
    ioc = iocs("bsread", 32, 24, 10)
    push = Sender("tcp://127.0.0.1:0", mode="PUSH", queue_size=20, block=True, send_timeout=1)
    plan = {}  # pulse id -> what the sender does with it

    def send(n):
        pulse_id = 1000 + n
        sec, ns = swissfel_timestamp(pulse_id)
        if n % 10 == 3:
            ns += 1  # breaks check_timestamp: counted as an error
            plan[pulse_id] = "bad timestamp"
        elif n % 10 == 6:
            pulse_id = 1000 + n - 2  # an old pulse id again: dropped by enforce_pid
            sec, ns = swissfel_timestamp(pulse_id)
            plan.setdefault(pulse_id, "ok")
        else:
            plan[pulse_id] = "ok"
        push.send(bsread_frame("cam0:FPICTURE", 32, 24, pulse_id, n % 2 == 0), pulse_id, (sec, ns))

    try:
        camera = cameras({"source_type": "bsread", "source": "TST", "connections": 2}, ioc.env)
        reason = camera.wait_state(False)
        assert reason == "Could not fetch bsread stream address for cam_server:TST"
        ioc.command(f"address {push.address}")
        feeder = feeders(send)
        got = camera_frames(camera, 15)
        feeder.stop()
    finally:
        push.close()
    pulse_ids = [g[0] for g in got]
    assert pulse_ids == sorted(set(pulse_ids))  # enforce_pid: never back
    for pulse_id, timestamp, image in got:
        assert plan[pulse_id] == "ok" and timestamp == swissfel_timestamp(pulse_id)
        assert image.shape == (24, 32) and (image == pulse_id % 60000).all()  # flat ones too
    wait_for(lambda: camera.counters()["errors"] >= 1, what="bad timestamps counted")
    wait_for(lambda: camera.counters()["dropped"] >= 1, what="old pulse ids dropped")
    assert camera.states[-1][0] is True


def test_bsread_camera_buffer_reorders_and_init_and_size_are_epics(iocs, cameras, feeders):
    ioc = iocs("bsread", 16, 8, 10)
    push = Sender("tcp://127.0.0.1:0", mode="PUSH", queue_size=50, block=True, send_timeout=1)
    order = [1, 0, 3, 2, 5, 4, 7, 6, 9, 8]  # pairs swapped: the buffer puts them back

    def send(n):
        pulse_id = 2000 + 10 * (n // 10) + order[n % 10]
        push.send(
            bsread_frame("cam0:FPICTURE", 16, 8, pulse_id, False),
            pulse_id,
            swissfel_timestamp(pulse_id),
        )

    try:
        config = {
            "source_type": "bsread",
            "source": "TST",
            "url": push.address,  # url wins over BSREADCONFIG (empty here)
            "buffer_size": 6,
            "buffer_threshold": 0.5,
            "threaded": True,
        }
        camera = cameras(config, ioc.env)
        feeder = feeders(send, period=0.005)
        reader = camera.reader()
        try:
            got = frames(reader, 20)
            # the camera stream, sent from its own thread (threaded)
            message = receive(f"tcp://127.0.0.1:{camera.spec['port']}")[0]
            assert message.data["image"].shape == (8, 16)
            ioc.command("size 20 8")  # the IOC now announces another size: frames refused
            wait_for(lambda: camera.counters()["errors"] > 5, what="wrong sizes counted")
            ioc.command("init OFF")
            assert "is not initialized (TST:INIT is 'OFF')" in camera.wait_state(False)
            online, reason = is_online_in({**os.environ, **ioc.env}, config)  # INIT, as epics
            assert not online and "is not initialized (TST:INIT is 'OFF')" in reason
        finally:
            reader.close()
            feeder.stop()
    finally:
        push.close()
    pulse_ids = [g[0] for g in got]
    assert pulse_ids == sorted(pulse_ids) and len(set(np.diff(pulse_ids))) == 1  # all, in order


def test_bsread_simulation_reads_source_fpicture_of_the_url(cameras, feeders):
    push = Sender("tcp://127.0.0.1:0", mode="PUSH", queue_size=20, block=True, send_timeout=1)
    try:
        feeder = feeders(
            lambda n: push.send(
                bsread_frame("SIM:FPICTURE", 12, 10, 500 + n, False),
                500 + n,
                swissfel_timestamp(500 + n),
            )
        )
        camera = cameras({"source_type": "bsread_simulation", "source": "SIM", "url": push.address})
        got = camera_frames(camera, 5)
        feeder.stop()
    finally:
        push.close()
    assert all(g[2].shape == (10, 12) and g[0] >= 500 for g in got)


# --- bschannel, stddaq, stream, array10 ------------------------------------------------------


def test_bschannel_single_channel_without_channel_key_keeps_source_pulse_ids(cameras, feeders):
    pub = Sender("tcp://127.0.0.1:0", mode="PUB", queue_size=10)
    try:
        feeder = feeders(
            lambda n: pub.send(
                {"X:FPICTURE": np.full((6, 8), n, np.uint8)}, 10**12 + n, (1_700_000_000, n)
            )
        )
        camera = cameras({"source_type": "bschannel", "source": pub.address})
        got = camera_frames(camera, 5)
        feeder.stop()
    finally:
        pub.close()
    for pulse_id, timestamp, image in got:  # CamServer loses these (§12); shmcam keeps them
        n = pulse_id - 10**12
        assert timestamp == (1_700_000_000, n) and (image == n % 256).all()


def test_stddaq_address_from_redis_and_default_channel(cameras, feeders, redis):
    pub = Sender("tcp://127.0.0.1:0", mode="PUB", queue_size=10)
    try:
        assert redis_cli(int(redis.split(":")[1]), "SELECT", "0") == "OK"
        assert redis_cli(int(redis.split(":")[1]), "SET", "JF07T32V01", pub.address) == "OK"
        feeder = feeders(
            lambda n: pub.send(
                {"JF07T32V01:FPICTURE": np.full((4, 5), n, np.uint16), "other": 1.5},
                7000 + n,
                (1_700_000_000, n),
            )
        )
        config = {"source_type": "stddaq", "source": "JF07T32V01", "url": redis, "db": "0"}
        camera = cameras(config)
        got = camera_frames(camera, 3)
        feeder.stop()
    finally:
        pub.close()
    assert all((g[2] == g[0] - 7000).all() for g in got)


def test_stddaq_without_the_device_in_redis_does_not_start_and_says_why(node, tmp_path, redis):
    config = {"source_type": "stddaq", "source": "NOPE", "url": redis}
    with pytest.raises(AssertionError, match="holds no stream address for device 'NOPE'"):
        CameraProcess(node, "nope", config, tmp_path)


STD_DAQ_CODES = {np.dtype(np.uint16): 2, np.dtype(np.float16): 22, np.dtype(np.int32): 14}


def std_daq_message(pulse_id: int, image: np.ndarray, code: int | None = None) -> list[bytes]:
    code = STD_DAQ_CODES[image.dtype] if code is None else code
    meta = struct.pack("<QQQHHH", pulse_id, image.shape[0], image.shape[1], code, 0, 3)
    return [meta, image.tobytes()]


def test_stream_std_daq_image_format_float16_widened_bad_messages_counted(
    cameras, feeders, zmq_context
):
    socket = zmq_context.socket(zmq.PUB)
    port = socket.bind_to_random_port("tcp://127.0.0.1")

    def send(n):
        image = np.full((3, 4), n / 8, np.float16)
        if n % 5 == 4:
            socket.send_multipart(std_daq_message(n, image)[:1] + [b"short"])  # size lies
        elif n % 5 == 2:
            socket.send_multipart(std_daq_message(n, image, code=99))  # unknown dtype code
        else:
            socket.send_multipart(std_daq_message(n, image))

    try:
        feeder = feeders(send)
        camera = cameras({"source_type": "stream", "source": f"tcp://127.0.0.1:{port}"})
        reader = camera.reader()
        try:
            got = frames(reader, 6)
            client = receive(f"tcp://127.0.0.1:{camera.spec['port']}")[0]  # a subscriber
        finally:
            reader.close()
        feeder.stop()
    finally:
        socket.close(linger=0)
    for pulse_id, _, image in got:  # the pulse id is the metadata's id
        assert pulse_id % 5 in (0, 1, 3) and image.dtype == np.float32
        assert (image == np.float32(np.float16(pulse_id / 8))).all()
    assert client.data["image"].dtype == np.float32
    wait_for(lambda: camera.counters()["errors"] >= 2, what="bad messages counted")
    assert camera.process.poll() is None


@pytest.mark.parametrize("modes", [("PUB", "SUB"), ("PUSH", "PULL")])
def test_array10_json_header_and_raw_buffer(cameras, feeders, zmq_context, modes):
    socket = zmq_context.socket(getattr(zmq, modes[0]))
    port = socket.bind_to_random_port("tcp://127.0.0.1")

    def send(n):
        image = np.arange(12, dtype=np.int32).reshape(3, 4) + n
        header = {"htype": "array-1.0", "shape": [3, 4], "type": "int32", "frame": n}
        if n % 4 == 3:
            header["shape"] = [4, 4]  # more pixels than sent: counted
        try:
            socket.send_multipart([json.dumps(header).encode(), image.tobytes()], zmq.NOBLOCK)
        except zmq.Again:  # PUSH without a peer yet
            pass

    try:
        feeder = feeders(send)
        address = f"tcp://127.0.0.1:{port}"
        camera = cameras({"source_type": "array10", "source": address, "mode": modes[1]})
        got = camera_frames(camera, 6)
        feeder.stop()
    finally:
        socket.close(linger=0)
    pulse_ids = [g[0] for g in got]
    assert pulse_ids == sorted(set(pulse_ids))  # counted: never repeating
    for _, _, image in got:
        assert image.dtype == np.int32 and (np.diff(image.ravel()) == 1).all()
    wait_for(lambda: camera.counters()["errors"] >= 1, what="a lying header counted")


# --- simulation ------------------------------------------------------------------------------


@pytest.mark.parametrize("image_type", ["beam", "raw", "static_beam", "static_raw"])
def test_simulation_image_types(cameras, image_type):
    config = {
        "source_type": "simulation",
        "size_x": 64,
        "size_y": 48,
        "frame_rate": 25,
        "image_type": image_type,
    }
    camera = cameras(config)
    got = camera_frames(camera, 4)
    images = [g[2] for g in got]
    assert all(image.dtype == np.uint16 and image.shape == (48, 64) for image in images)
    assert np.diff([g[0] for g in got]).tolist() == [4, 4, 4]  # 100 Hz ids at 25 Hz
    static = all(np.array_equal(images[0], image) for image in images)
    assert static == image_type.startswith("static_")
    middle = images[0][16:32, 24:40].mean()  # the spot, if any, is in the middle
    assert (middle > 10 * np.median(images[0])) == image_type.endswith("beam")


# --- script cameras with CamServer's interface ----------------------------------------------

CAMSERVER_SCRIPT = """
import numpy
from cam_server.camera.source.camera import *


class mycam(Camera):
    def __init__(self, camera_config):
        Camera.__init__(self, camera_config)
        self.width_raw, self.height_raw = 10, 6
        self.n = 0

    def verify_camera_online(self):
        if self.camera_config.get_configuration().get("unplugged"):
            raise RuntimeError("Camera mycam is unplugged")

    def connect(self):
        self.connected = True

    def read(self):
        self.n += 1
        width, height = self.get_raw_geometry()
        return numpy.full(width * height, self.n, "uint16")  # flat: reshaped to the geometry

    def get_pulse_id(self):
        return 4000 + self.n

    def get_send_channels(self, default_channels):
        return {**default_channels, "counter": self.n, "source": self.camera_config.get_source()}
"""


def test_camserver_camera_script_class_interface_and_extra_channels(cameras, tmp_path):
    (tmp_path / "camera_scripts").mkdir()
    (tmp_path / "camera_scripts" / "mycam.py").write_text(CAMSERVER_SCRIPT)
    config = {"source_type": "script", "class": "mycam", "source": "MY-CAM", "frame_rate": 20}
    camera = cameras(config)
    got = camera_frames(camera, 3)
    for pulse_id, _, image in got:
        assert image.shape == (6, 10) and (image == pulse_id - 4000).all()
    message = receive(f"tcp://127.0.0.1:{camera.spec['port']}")[0]
    assert message.data["counter"] == message.pulse_id - 4000
    assert message.data["source"] == "MY-CAM"
    assert list(message.data)[:6] == ["width", "height", "timestamp", "image", "x_axis", "y_axis"]
    scripts = tmp_path / "camera_scripts"
    assert is_online(config, "mycam", scripts) == (True, "online")
    unplugged = {**config, "unplugged": True}
    assert is_online(unplugged, "mycam", scripts) == (False, "Camera mycam is unplugged")


# --- camera keys -----------------------------------------------------------------------------


def test_image_background_true_is_the_latest_background_of_that_camera(cameras, tmp_path):
    backgrounds = tmp_path / "backgrounds"
    backgrounds.mkdir()
    for name, value in (
        ("cam0_20240101_000000_000000", 1),
        ("cam0_20250101_000000_000000", 3),  # the latest of cam0
        ("cam0_b_20260101_000000_000000", 9),  # another camera's
        ("uploaded", 7),
    ):
        np.save(backgrounds / f"{name}.npy", np.full((48, 64), value, np.uint16))
    config = {
        "source_type": "simulation",
        "size_x": 64,
        "size_y": 48,
        "image_type": "static_raw",
        "frame_rate": 20,
    }
    subtracted = cameras({**config, "image_background": True})  # camera cam0
    plain = cameras(config, name="plain")
    readers = plain.reader(), subtracted.reader()
    try:
        raw, minus = (frames(reader, 1)[0][2].astype(int) for reader in readers)
    finally:
        for reader in readers:
            reader.close()
    assert np.array_equal(minus, np.clip(raw - 3, 0, None))


def lz4_block_decompress(part: bytes) -> bytes:
    """bsread's lz4 data header: a 4-byte big-endian size, then an LZ4 block."""
    import lz4.block

    return lz4.block.decompress(part[4:], uncompressed_size=int.from_bytes(part[:4], "big"))


def test_ipc_compression_queue_size_and_forwarder(cameras, tmp_path, zmq_context):
    forwarder_port = free_port_block(1)
    config = {
        "source_type": "simulation",
        "size_x": 40,
        "size_y": 30,
        "frame_rate": 50,
        "protocol": "ipc",
        "image_compression": True,
        "data_header_compression": "lz4",
        "scalar_compression": "lz4",
        "queue_size": 5,
        "forwarder_port": forwarder_port,
        "forwarder_compression": "lz4",
    }
    camera = cameras(config)
    ipc = camera.ready["stream_ipc"]
    assert ipc.startswith("ipc://") and camera.ready["forwarder_port"] == forwarder_port
    with Receiver(ipc, timeout=5) as receiver:  # ipc beside tcp: the same stream
        message = receiver.receive()
        assert message is not None and message.data["image"].shape == (30, 40)
    raw = zmq_context.socket(zmq.SUB)
    raw.setsockopt(zmq.SUBSCRIBE, b"")
    raw.connect(f"tcp://127.0.0.1:{camera.spec['port']}")
    assert raw.poll(5000)
    parts = raw.recv_multipart()
    raw.close(linger=0)
    assert json.loads(parts[0])["dh_compression"] == "lz4"
    header = Decoder().decode(parts)  # the data header, as a client decodes it
    assert header.data["image"].shape == (30, 40)
    channels = json.loads(lz4_block_decompress(parts[1]))["channels"]
    compression = {c["name"]: c.get("compression") for c in channels}
    assert compression["image"] == "bitshuffle_lz4" and compression["x_axis"] == "lz4"
    with Receiver(f"tcp://127.0.0.1:{forwarder_port}", mode="PULL", timeout=5) as feed:
        wait_for(lambda: camera.counters()["forwarder_clients"] == 1, what="forwarder client")
        message = feed.receive()
        assert list(message.data) == [f"{camera.spec['camera']}:FPICTURE"]
        assert message.data[f"{camera.spec['camera']}:FPICTURE"].shape == (30, 40)
    assert camera.stop() == 0
    assert not os.path.exists(ipc[len("ipc://") :])  # the endpoint is gone with the camera


def test_abort_on_error_ends_the_camera_with_the_error(node, tmp_path):
    (tmp_path / "camera_scripts").mkdir()
    (tmp_path / "camera_scripts" / "broken.py").write_text(
        "class Source:\n"
        "    def __init__(self, config):\n"
        "        self.n = 0\n"
        "    def read(self, timeout):\n"
        "        self.n += 1\n"
        "        if self.n == 3:\n"
        "            raise RuntimeError('sensor unplugged')\n"
        "        import numpy\n"
        "        return numpy.zeros((2, 2), 'uint8')\n"
    )
    config = {"source_type": "script", "source": "broken", "frame_rate": 50}
    camera = CameraProcess(node, "broken", config, tmp_path)  # abort_on_error: CamServer's true
    assert camera.wait_report("error") == "RuntimeError: sensor unplugged"
    assert camera.wait() == 1


def test_debug_logs_pulse_id_steps_and_bad_foreign_values_are_counted(cameras, tmp_path):
    (tmp_path / "camera_scripts").mkdir()
    (tmp_path / "camera_scripts" / "odd").write_text(
        "import numpy\n"
        "class Source:\n"
        "    def __init__(self, config):\n"
        "        self.n = 0\n"
        "    def read(self, timeout):\n"
        "        self.n += 1\n"
        "        kind = self.n % 4\n"
        "        if kind == 1:\n"
        "            return numpy.ones((3, 3), numpy.longdouble), self.n\n"  # float128
        "        if kind == 2:\n"
        "            return numpy.ones((3, 3), 'uint8'), 2**64 + self.n\n"  # beyond int64
        "        if kind == 3:\n"
        "            return numpy.ones((3, 3), 'uint8'), self.n, (2**70, 0)\n"  # time too
        "        return numpy.ones((3, 3), 'uint8'), self.n\n"
    )
    config = {"source_type": "script", "source": "odd", "frame_rate": 100, "debug": True}
    camera = cameras(config)
    reader = camera.reader()
    try:
        got = frames(reader, 3)
        message = receive(f"tcp://127.0.0.1:{camera.spec['port']}")[0]  # a client: no crash
    finally:
        reader.close()
    assert all(g[0] % 4 == 0 for g in got) and message.pulse_id % 4 == 0
    wait_for(lambda: camera.counters()["errors"] >= 9, what="refused frames counted")
    assert camera.process.poll() is None
    assert any("pulse id" in line and "step 4" in line for line in camera.log)


# --- through a real supervisor ---------------------------------------------------------------


def test_camserver_configs_through_the_supervisor(supervisor, redis, feeders, zmq_context):
    pub = Sender("tcp://127.0.0.1:0", mode="PUB", queue_size=10)
    array10 = zmq_context.socket(zmq.PUB)
    array10_port = array10.bind_to_random_port("tcp://127.0.0.1")
    redis_port = int(redis.split(":")[1])
    assert redis_cli(redis_port, "SET", "DET01", pub.address) == "OK"

    def send(n):
        pub.send({"DET01:FPICTURE": np.full((4, 6), n, np.uint16)}, 9000 + n, (1_700_000_000, n))
        header = json.dumps({"shape": [5, 7], "type": "uint8"}).encode()
        array10.send_multipart([header, np.full((5, 7), n % 256, np.uint8).tobytes()])

    feeder = feeders(send)
    try:
        sup = supervisor(
            cameras={
                "det": {"source_type": "stddaq", "source": "DET01", "url": redis},
                "arr": {"source_type": "array10", "source": f"tcp://127.0.0.1:{array10_port}"},
            }
        )
        message = receive(sup.call("GET", "/api/v1/cam/det")["stream"], timeout=20)[0]
        assert message.pulse_id >= 9000 and message.data["image"].shape == (4, 6)
        message = receive(sup.call("GET", "/api/v1/cam/arr")["stream"], timeout=20)[0]
        assert message.data["image"].shape == (5, 7)
        refused = sup.call(
            "POST",
            "/api/v1/cam/old/config",
            expect=400,
            json={"source_type": "bsread", "source": "tcp://daq:9000", "source_mode": "PULL"},
        )
        assert (
            "source_mode is not a camera key of shmcam: use CamServer's mode" in (refused["status"])
        )
        refused = sup.call(
            "POST", "/api/v1/cam/old/config", expect=400, json={"source": "tcp://daq:9000"}
        )
        assert "source must be the camera's PV prefix" in refused["status"]  # epics by default
        assert "old" not in sup.call("GET", "/api/v1/cam")["cameras"]
    finally:
        feeder.stop()
        pub.close()
        array10.close(linger=0)


def test_a_forwarder_client_keeps_an_on_demand_camera_running(supervisor):
    forwarder_port = free_port_block(1)
    camera = {
        "source_type": "simulation",
        "size_x": 32,
        "size_y": 24,
        "frame_rate": 20,
        "no_client_timeout": 1,
        "forwarder_port": forwarder_port,
    }
    sup = supervisor(cameras={"fwd": camera})

    def running():
        return "fwd" in sup.call("GET", "/api/v1/cam/info")["info"]["active_instances"]

    sup.call("GET", "/api/v1/cam/fwd")  # started on demand, no stream client
    with Receiver(f"tcp://127.0.0.1:{forwarder_port}", mode="PULL", timeout=5) as feed:
        assert list(feed.receive().data) == ["fwd:FPICTURE"]
        time.sleep(3)  # three no_client_timeouts with only DataBuffer's feed connected
        assert running()
    wait_for(lambda: not running(), what="the camera stopped once the feed left")
