"""A Channel Access camera IOC (caproto) for tests and benchmarks, and `Ioc`, which runs it.

`python tests/ioc.py KIND PREFIX WIDTH HEIGHT RATE` serves a camera on 127.0.0.1 at the port
in EPICS_CA_SERVER_PORT. KIND `epics`: <P>:FPICTURE, :WIDTH, :HEIGHT, :INIT. KIND `bsread`
(CamServer's bsread camera, whose frames the test streams itself): <P>:WIDTH, :HEIGHT, :INIT
and :BSREADCONFIG (the stream address, empty at start). KIND `area_detector`:
<P>:image1:ArrayData, ArraySize0_RBV, ArraySize1_RBV, UniqueId_RBV, ArrayCounter_RBV and
<P>:cam1:Acquire, DataType, ColorMode. KIND `psss`: the PVs of CamServer's psss function, no
camera: <P>:SPC_ROI_YMIN, :SPC_ROI_YMAX, :SPECTRUM_X (WIDTH values, 100 + 0.5 i) read by it and
:SPECTRUM_Y, :SPECTRUM_CENTER, :SPECTRUM_FWHM, :SPECTRUM_COM, :SPECTRUM_STD written by it. The
pixels travel as SHORT and mean uint16 (as areaDetector serves them). Frame n (UniqueId n)
holds (i + n) % 4096 at flat index i, so a reader can check every pixel. Commands on stdin, one
a line: `size W H` (live resize), `lie W H` (announce a size, keep sending the old one),
`acquire 0|1`, `init TEXT` (INIT's value), `address TEXT` (BSREADCONFIG's value). The IOC
prints `ready` once it serves, and exits when its stdin closes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

MAX_PIXELS = 2560 * 2160
DATA_TYPES = [
    "Int8",
    "UInt8",
    "Int16",
    "UInt16",
    "Int32",
    "UInt32",
    "Int64",
    "UInt64",
    "Float32",
    "Float64",
]
COLOR_MODES = ["Mono", "Bayer", "RGB1", "RGB2", "RGB3", "YUV444", "YUV422", "YUV421"]


def frame(n: int, width: int, height: int) -> np.ndarray:
    """What the IOC serves as frame n (uint16, flat)."""
    return ((np.arange(width * height, dtype=np.uint32) + n) % 4096).astype(np.uint16)


def ca_environment(port: int) -> dict:
    """Client and server environment for one loopback IOC on its own port (docs/pitfalls.md)."""
    return {
        "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_SERVER_PORT": str(port),
        "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
        "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_CA_MAX_ARRAY_BYTES": str(4 * MAX_PIXELS + 4096),
    }


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ioc:
    """The IOC as a subprocess; `restart()` kills it and starts it again on the same port."""

    def __init__(self, kind: str, prefix: str, width: int, height: int, rate: float):
        self.args = [kind, prefix, str(width), str(height), str(rate)]
        self.port = free_udp_port()
        self.env = ca_environment(self.port)
        self.process: subprocess.Popen | None = None

    def start(self) -> Ioc:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *self.args],
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
        )
        line = self.process.stdout.readline().strip()
        if line != "ready":
            self.kill()
            raise RuntimeError(f"test IOC did not start (said {line!r})")
        return self

    def command(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.communicate()

    def restart(self) -> None:
        self.kill()
        self.start()


def pv_database(kind: str, prefix: str, width: int, height: int):
    """The IOC's PVs, and the names of its image, width, height and counter PVs."""
    from caproto import ChannelDouble, ChannelEnum, ChannelInteger, ChannelShort, ChannelString

    def image():
        return ChannelShort(value=np.zeros(MAX_PIXELS, np.int16), max_length=MAX_PIXELS)

    if kind == "psss":
        channels = {
            "SPC_ROI_YMIN": ChannelInteger(value=0),
            "SPC_ROI_YMAX": ChannelInteger(value=0),
            "SPECTRUM_X": ChannelDouble(value=100 + 0.5 * np.arange(width), max_length=4096),
            "SPECTRUM_Y": ChannelDouble(value=np.zeros(width), max_length=4096),
            **{
                name: ChannelDouble(value=0.0)
                for name in ("SPECTRUM_CENTER", "SPECTRUM_FWHM", "SPECTRUM_COM", "SPECTRUM_STD")
            },
        }
        names = (None, None, None, None)
    elif kind == "epics":
        channels = {
            "FPICTURE": image(),
            "WIDTH": ChannelInteger(value=width),
            "HEIGHT": ChannelInteger(value=height),
            "INIT": ChannelString(value="INIT"),
        }
        names = ("FPICTURE", "WIDTH", "HEIGHT", None)
    elif kind == "bsread":
        channels = {
            "WIDTH": ChannelInteger(value=width),
            "HEIGHT": ChannelInteger(value=height),
            "INIT": ChannelString(value="INIT"),
            "BSREADCONFIG": ChannelString(value=""),
        }
        names = (None, "WIDTH", "HEIGHT", None)
    else:
        channels = {
            "image1:ArrayData": image(),
            "image1:ArraySize0_RBV": ChannelInteger(value=width),
            "image1:ArraySize1_RBV": ChannelInteger(value=height),
            "image1:UniqueId_RBV": ChannelInteger(value=0),
            "image1:ArrayCounter_RBV": ChannelInteger(value=0),
            "cam1:Acquire": ChannelInteger(value=1),
            "cam1:DataType": ChannelEnum(value="UInt16", enum_strings=DATA_TYPES),
            "cam1:ColorMode": ChannelEnum(value="Mono", enum_strings=COLOR_MODES),
        }
        names = (
            "image1:ArrayData",
            "image1:ArraySize0_RBV",
            "image1:ArraySize1_RBV",
            "image1:UniqueId_RBV",
        )
    pvdb = {f"{prefix}:{name}": channel for name, channel in channels.items()}
    return pvdb, [f"{prefix}:{name}" if name else None for name in names]


async def serve(kind: str, prefix: str, width: int, height: int, rate: float) -> None:
    from caproto.asyncio.server import start_server

    pvdb, (image, width_pv, height_pv, counter) = pv_database(kind, prefix, width, height)
    acquire = pvdb.get(f"{prefix}:cam1:Acquire")
    state = {"size": (width, height), "acquire": 1}

    async def commands():
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            word, *args = line.split()
            if word in ("size", "lie"):  # lie: announce a size, keep sending the old one
                size = tuple(map(int, args))
                if word == "size":
                    state["size"] = size
                await pvdb[width_pv].write(size[0])
                await pvdb[height_pv].write(size[1])
            elif word == "acquire" and acquire is not None:
                state["acquire"] = int(args[0])
                await acquire.write(state["acquire"])
            elif word in ("init", "address"):
                pv = "INIT" if word == "init" else "BSREADCONFIG"
                await pvdb[f"{prefix}:{pv}"].write(" ".join(args))
        os._exit(0)  # the test's end of stdin: nothing to clean up

    async def frames():
        n, loop = 0, asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += 1 / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not state["acquire"]:
                continue
            n += 1
            if counter is not None:
                await pvdb[counter].write(n)
                await pvdb[f"{prefix}:image1:ArrayCounter_RBV"].write(n)
            value = frame(n, *state["size"]).view(np.int16)
            value.flags.writeable = False
            await pvdb[image].write(value)

    async def startup(async_lib):
        print("ready", flush=True)
        asyncio.get_running_loop().create_task(commands())
        if image is not None:
            asyncio.get_running_loop().create_task(frames())

    await start_server(pvdb, interfaces=["127.0.0.1"], startup_hook=startup)


if __name__ == "__main__":
    kind_, prefix_, w, h, r = sys.argv[1:6]
    asyncio.run(serve(kind_, prefix_, int(w), int(h), float(r)))
