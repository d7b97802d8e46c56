#!/usr/bin/env python3
"""projections.py written against the contract alone: numpy and the standard library, no shmcam.

Everything it needs is in docs/external.md (the environment) and docs/ring.md (the layouts):
the frame ring is read and the record ring written by hand, with the futex for wake-ups. It
handles what this example needs (uint16/uint8 frames, float64 channels, one writer
generation) and shows that the contract is enough; real programs use shmcam.external or
include/shmcam/.
"""

import ctypes
import json
import mmap
import os
import signal
import struct
import time

import numpy as np

SHM = "/dev/shm"
COMMON = struct.Struct("<8sIIqQIIQQQqqII")  # the first 88 bytes of every ring header
GEOMETRY = struct.Struct("<8sI3IQ")  # a frame ring's, at 88
FRAME_META = struct.Struct("<qqq")  # pulse_id, ts_sec, ts_ns at 8 in a frame slot
RECORD_META = struct.Struct("<qqqQQQII")  # at 8 in a record slot
ENTRY = struct.Struct("<QQ3IHHII")
FLOAT64 = 11
LIVE, SUPERSEDED, CLOSED = 0, 1, 2
libc = ctypes.CDLL(None, use_errno=True)
SYS_FUTEX, FUTEX_WAIT, FUTEX_WAKE = 202, 0, 1  # x86-64


class Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


def futex(address: int, op: int, value: int, timeout: float = 0.0) -> None:
    ts = Timespec(int(timeout), int(timeout % 1 * 1e9))
    libc.syscall(SYS_FUTEX, ctypes.c_void_p(address), op, value, ctypes.byref(ts), None, 0)


def newest_generation(base: str) -> int:
    found = [n[len(base) + 2 :] for n in os.listdir(SHM) if n.startswith(base + ".g")]
    return max((int(g) for g in found if g.isdigit()), default=-1)


class Segment:
    """A mapped ring generation and its header's live words."""

    def __init__(self, name: str, writable: bool = False):
        with open(f"{SHM}/{name}", "r+b" if writable else "rb") as f:
            access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
            self.mm = mmap.mmap(f.fileno(), 0, access=access)
        self.name = name
        self.magic, _, _, _, _, self.slots, _, self.stride, *_ = COMMON.unpack_from(self.mm, 0)
        self.q = np.frombuffer(self.mm, np.int64, 16, 0)  # header as int64 words
        self.i = np.frombuffer(self.mm, np.uint32, 32, 0)  # and as uint32 words

    def slot(self, n: int) -> int:
        return 128 + n % self.slots * self.stride

    def seq(self, n: int) -> int:
        return struct.unpack_from("<Q", self.mm, self.slot(n))[0]

    write_seq = property(lambda self: int(self.q[8]))
    state = property(lambda self: int(self.i[20]))
    futex_word = property(lambda self: int(self.i[21]))
    futex_address = property(lambda self: self.i.ctypes.data + 84)

    def bump(self) -> None:
        self.i[21] += 1
        futex(self.futex_address, FUTEX_WAKE, 0x7FFFFFFF)


class Frames:
    """The frames of a ring from the newest on, following new generations. Iterating yields
    (pulse_id, (sec, ns), image view, intact) with intact() telling, after use, whether the
    frame was overwritten meanwhile."""

    def __init__(self, base: str, stopping):
        self.base, self.stopping = base, stopping
        self.ring = None
        while self.ring is None and not stopping():
            if not self.follow():
                time.sleep(0.01)

    def follow(self) -> bool:
        """Map the newest generation if it is not ours; True if it was."""
        newest = newest_generation(self.base)
        name = f"{self.base}.g{newest}"
        if newest < 0 or (self.ring is not None and self.ring.name == name):
            return False
        successor = Segment(name)
        assert successor.magic == b"SHMCAMRG", f"{name} is not a frame ring"
        # the first: from its newest frame on; a successor: from its first_seq on
        self.n = successor.write_seq if self.ring is None else int(successor.q[9])
        self.ring = successor
        return True

    def __iter__(self):
        while not self.stopping():
            ring, n = self.ring, self.n
            word = ring.futex_word
            if ring.write_seq <= n:
                if ring.state != LIVE:  # read to its end: is there a successor?
                    self.follow() or time.sleep(0.01)
                else:
                    futex(ring.futex_address, FUTEX_WAIT, word, 0.25)
                continue
            if ring.write_seq - n >= ring.slots:  # lapped: on to the newest
                n = ring.write_seq - 1
            self.n = n + 1
            slot = ring.slot(n)
            if ring.seq(n) != 2 * n + 2:
                continue
            dtype, ndim, *shape, _ = GEOMETRY.unpack_from(ring.mm, 88)
            pulse_id, sec, ns = FRAME_META.unpack_from(ring.mm, slot + 8)
            shape = shape[:ndim]
            image = np.frombuffer(
                ring.mm, np.dtype(dtype.rstrip(b"\0").decode()), int(np.prod(shape)), slot + 128
            ).reshape(shape)
            if ring.seq(n) == 2 * n + 2:
                yield pulse_id, (sec, ns), image, (lambda r=ring, k=n: r.seq(k) == 2 * k + 2)


class RecordWriter:
    """Writes records of float64 channels into a new generation of the output ring."""

    def __init__(self, base: str):
        old_generation = newest_generation(base)
        old = Segment(f"{base}.g{old_generation}", writable=True)  # the supervisor made it
        name = f"{base}.g{old_generation + 1}"
        size = 128 + old.slots * old.stride
        draft = f"{SHM}/{name}.draft{os.getpid()}"
        with open(draft, "w+b") as f:
            f.truncate(size)
            header = COMMON.pack(
                b"SHMCAMRC",
                1,
                128,
                os.getpid(),
                time.time_ns(),
                old.slots,
                64,
                old.stride,
                old.stride - 64,
                old_generation + 1,
                0,
                0,
                LIVE,
                0,
            )
            f.write(header)
        os.link(draft, f"{SHM}/{name}")  # appears whole, under its name
        os.unlink(draft)
        old.i[20] = SUPERSEDED  # its readers move to ours
        old.bump()
        os.unlink(f"{SHM}/{old.name}")
        self.ring = Segment(name, writable=True)
        self.format = 0
        self.last_table = None

    def write(self, pulse_id: int, timestamp, channels: dict) -> None:
        ring, n = self.ring, self.ring.write_seq
        slot = ring.slot(n)
        names = list(channels)
        table = [(name, np.shape(value)) for name, value in channels.items()]
        if table != self.last_table:  # another table: readers must not reuse the one parsed
            self.format, self.last_table = self.format + 1, table
        arrays = [np.atleast_1d(np.asarray(v, np.float64)) for v in channels.values()]
        raw_names = [name.encode() + b"\0" for name in names]
        table_nbytes = ENTRY.size * len(names) + sum(map(len, raw_names))
        offset = (64 + table_nbytes + 63) // 64 * 64
        struct.pack_into("<Q", ring.mm, slot, 2 * n + 1)  # being written
        name_at = 64 + ENTRY.size * len(names)
        for i, (value, array, raw) in enumerate(zip(channels.values(), arrays, raw_names)):
            ndim = np.ndim(value)
            shape = (*np.shape(value), 0, 0, 0)[:3]
            ENTRY.pack_into(
                ring.mm,
                slot + 64 + i * ENTRY.size,
                offset,
                array.nbytes,
                *shape,
                FLOAT64,
                ndim,
                name_at,
                len(raw) - 1,
            )
            ring.mm[slot + name_at : slot + name_at + len(raw)] = raw
            ring.mm[slot + offset : slot + offset + array.nbytes] = array.tobytes()
            name_at += len(raw)
            offset = (offset + array.nbytes + 63) // 64 * 64
        assert offset <= ring.stride, "a record larger than the slots: not handled here"
        RECORD_META.pack_into(
            ring.mm,
            slot + 8,
            pulse_id,
            *timestamp,
            time.monotonic_ns(),
            self.format,
            64,
            len(names),
            table_nbytes,
        )
        struct.pack_into("<Q", ring.mm, slot, 2 * n + 2)  # complete
        ring.q[8] = n + 1  # write_seq
        ring.bump()

    def close(self) -> None:
        self.ring.i[20] = CLOSED
        self.ring.bump()


def main() -> None:
    env = os.environ
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    config_path, config_seen, threshold = env.get("SHMCAM_CONFIG"), None, 0.0
    stats = None
    if env.get("SHMCAM_STATS"):
        with open(f"{SHM}/{env['SHMCAM_STATS']}", "r+b") as f:
            stats = np.frombuffer(mmap.mmap(f.fileno(), 0), np.int64)[8:]  # counters after 64 B
    source = Frames(env["SHMCAM_INPUT_RING"], lambda: bool(stop))
    out = RecordWriter(env["SHMCAM_OUTPUT_RING"])  # after the input: a new generation says so
    for pulse_id, timestamp, image, intact in source:
        started = time.perf_counter_ns()
        if stats is not None:  # the counters: frames_in, ..., proc_ns_total, proc_ns_last
            stats[0] += 1
        if config_path:
            st = os.stat(config_path)
            if (st.st_ino, st.st_mtime_ns) != config_seen:
                config_seen = (st.st_ino, st.st_mtime_ns)
                with open(config_path) as f:
                    threshold = float(json.load(f).get("threshold", 0.0))
        weights = np.where(image > threshold, image - threshold, 0).astype(np.float64)
        x_profile, y_profile = weights.sum(axis=0), weights.sum(axis=1)
        intensity = x_profile.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            centroids = (
                x_profile @ np.arange(x_profile.size) / intensity,
                y_profile @ np.arange(y_profile.size) / intensity,
            )
        if intact():
            out.write(
                pulse_id,
                timestamp,
                {
                    "x_profile": x_profile,
                    "y_profile": y_profile,
                    "intensity": intensity,
                    "x_centroid": centroids[0],
                    "y_centroid": centroids[1],
                    "threshold": threshold,
                },
            )
        if stats is not None:
            elapsed = time.perf_counter_ns() - started
            stats[7] += elapsed
            stats[8] = elapsed
    out.close()


if __name__ == "__main__":
    main()
