"""Cross-process wait/wake on a 32-bit word in shared memory (Linux futex).

Readers sleep in the kernel until the writer bumps the word: no spinning, and a wake-up costs
the writer one ~1.5 µs syscall. Works on any MAP_SHARED mapping, so C readers can use the same
word (see include/shmcam/ring.h).
"""

from __future__ import annotations

import ctypes
import errno
import mmap

import numpy as np

_SYS_FUTEX = 202  # x86-64's; the package refuses other CPUs (see shmcam/shm/__init__.py)

_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_WAKE_ALL = 0x7FFFFFFF
_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def wait(address: int, expected: int, timeout: float) -> None:
    """Sleep while the word at address equals expected, at most timeout seconds.

    Returns on wake-up, timeout, signal or when the word already differs; callers re-check
    their condition in a loop, as with any condition variable. ctypes releases the GIL.
    """
    ts = _Timespec(int(timeout), int((timeout % 1.0) * 1e9))
    if (
        _syscall(
            _SYS_FUTEX,
            ctypes.c_void_p(address),
            _FUTEX_WAIT,
            ctypes.c_uint32(expected),
            ctypes.byref(ts),
            None,
            0,
        )
        == -1
    ):
        err = ctypes.get_errno()
        if err not in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR):
            raise OSError(err, f"futex wait failed: {errno.errorcode.get(err, err)}")


def wake(address: int) -> None:
    """Wake every process sleeping on the word at address."""
    _syscall(_SYS_FUTEX, ctypes.c_void_p(address), _FUTEX_WAKE, _WAKE_ALL, None, None, 0)


def word_address(mm: mmap.mmap, offset: int) -> int:
    """The address of a 32-bit word of a mapping, for wait and wake, without keeping an
    export of the mapping (which would keep it from closing)."""
    return np.frombuffer(mm, np.uint32, 1, offset).ctypes.data
