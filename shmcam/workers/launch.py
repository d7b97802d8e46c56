"""Becomes an external program: `python -I -S launch.py PARENT_PID PROGRAM [ARGS...]`.

Run as a script (no package imports), by workers/external.py, so that the program gets what
`subprocess` cannot give it without running Python between fork and exec (unsafe in a
process with threads): death with its instance process (PR_SET_PDEATHSIG, which survives
exec), and the signal dispositions of a fresh process (Python ignores SIGPIPE and SIGXFSZ,
the instance SIGINT; ignored signals are inherited through exec). Its own process group, the
instance's memory limit and its environment are set by subprocess and inherited. Exit code
127 if the program cannot be run, with the reason on stderr (the instance log).
"""

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main() -> None:
    parent, program = int(sys.argv[1]), sys.argv[2]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        sys.exit(f"cannot run {program}: prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        sys.exit(f"not running {program}: its instance process is gone")
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execv(program, sys.argv[2:])
    except OSError as error:
        print(f"cannot run {program}: {error.strerror}", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    main()
