"""POSIX shared-memory segments, mapped directly from /dev/shm.

These are the same objects `multiprocessing.shared_memory.SharedMemory` creates (shm_open names
on Linux live in /dev/shm), but mapping them ourselves keeps Python's resource_tracker out of
the picture: on Python 3.11 a tracked attach unlinks the segment when the attaching process
exits, under every other reader's feet (see docs/pitfalls.md). Lifetime is explicit:
whoever creates a segment unlinks it, and the supervisor sweeps stale ones.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

from shmcam.names import check_name

SHM_DIR = Path("/dev/shm")

# Every shmcam segment starts with this preamble, so a sweeper can tell whose it is.
PREAMBLE = struct.Struct("<8sIIqQ")  # magic, version, header_size, owner_pid, created_ns
SPACE_MARGIN = 64 * 1024 * 1024


class ShmError(RuntimeError):
    """A shared-memory segment could not be created or used."""


def segment_name(*parts: str) -> str:
    """Dotted segment name 'shmcam.<part>.<part>...' (dots never occur inside a part)."""
    return ".".join(["shmcam", *(check_name(p) for p in parts)])


def _path(name: str) -> Path:
    if "/" in name or name.startswith("."):
        raise ValueError(f"invalid segment name {name!r}")
    return SHM_DIR / name


def free_bytes() -> int:
    st = os.statvfs(SHM_DIR)
    return st.f_bavail * st.f_frsize


def create(name: str, size: int, initialize: Callable[[mmap.mmap], None]) -> mmap.mmap:
    """Create a segment, pre-fault it, let `initialize` write its header, then publish it.

    The segment appears under its name only once initialised (built under a temporary name,
    then hard-linked, which fails if the name exists), so no reader ever maps a half-made one.
    Pre-faulting matters twice: first writes into fresh tmpfs pages are ~3x slower, and a
    tmpfs that runs full mid-stream kills the writer with SIGBUS instead of an error.
    """
    available = free_bytes()
    if size + SPACE_MARGIN > available:
        raise ShmError(
            f"not enough shared memory for {name}: needs {size / 2**20:.0f} MiB, /dev/shm has "
            f"{available / 2**20:.0f} MiB free (keeping {SPACE_MARGIN / 2**20:.0f} MiB spare); "
            f"reduce the ring depth or enlarge /dev/shm"
        )
    final, draft = _path(name), _path(f"{name}.draft{os.getpid()}")
    fd = os.open(draft, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, size)
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        _prefault(mm)
        initialize(mm)
        os.link(draft, final)
    except BaseException:
        if "mm" in locals():
            mm.close()
        raise
    finally:
        os.close(fd)
        os.unlink(draft)
    return mm


def _prefault(mm: mmap.mmap, chunk: int = 1 << 22) -> None:
    zeros = bytes(chunk)
    for offset in range(0, len(mm), chunk):
        n = min(chunk, len(mm) - offset)
        mm[offset : offset + n] = zeros[:n]


def attach(name: str, writable: bool = False) -> tuple[mmap.mmap, int]:
    """Map an existing segment (read-only by default) and return it with its inode number.

    The inode tells a re-created segment of the same name from the one already mapped.
    Raises FileNotFoundError if the segment does not exist.
    """
    flags = os.O_RDWR if writable else os.O_RDONLY
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    fd = os.open(_path(name), flags)
    try:
        return mmap.mmap(fd, 0, mmap.MAP_SHARED, prot), os.fstat(fd).st_ino
    finally:
        os.close(fd)


def inode(name: str) -> int | None:
    try:
        return _path(name).stat().st_ino
    except FileNotFoundError:
        return None


def unlink(name: str) -> bool:
    """Remove a segment name; mappings that still exist stay valid. False if already gone."""
    try:
        os.unlink(_path(name))
        return True
    except FileNotFoundError:
        return False


def list_segments(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))


def owner_pid(name: str) -> int | None:
    """The pid recorded by the segment's creator, or None if it is not a shmcam segment."""
    try:
        with open(_path(name), "rb") as f:
            raw = f.read(PREAMBLE.size)
    except FileNotFoundError:
        return None
    if len(raw) < PREAMBLE.size or not raw.startswith(b"SHMCAM"):
        return None
    return PREAMBLE.unpack(raw)[3]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(prefix: str, young_seconds: float = 10.0) -> list[str]:
    """Unlink segments under prefix whose creator is dead.

    A segment without a readable preamble counts as stale only once it is older than
    young_seconds: it may be one being created right now.
    """
    removed = []
    for name in list_segments(prefix):
        pid = owner_pid(name)
        if pid is None:
            try:
                stale = time.time() - _path(name).stat().st_mtime > young_seconds
            except FileNotFoundError:
                continue
        else:
            stale = not pid_alive(pid)
        if stale and unlink(name):
            removed.append(name)
    return removed


def remove_all(prefix: str) -> list[str]:
    """Unlink every segment under prefix: a supervisor starting up owns all of its node's."""
    return [name for name in list_segments(prefix) if unlink(name)]
