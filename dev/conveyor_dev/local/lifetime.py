"""Child processes that die with the harness that started them.

A harness killed with SIGKILL (an OOM kill, a CI timeout, `kill -9`) runs no cleanup code, so
without this its emulators and service processes would keep running: holding ports, memory and,
for a worker, SQS messages. `die_with_parent(argv)` returns a command line that first runs this
module as a small guard: it asks the Linux kernel (prctl PR_SET_PDEATHSIG) to SIGKILL it when
its parent dies, checks that the parent is still the harness, and then execs `argv`. The
setting survives exec (of a non-setuid program), so it covers `java`, `prometheus` and other
emulators' interpreters too, and the pid the harness holds is the real program's.

Why a guard process and not `subprocess.Popen(preexec_fn=...)`: a preexec_fn makes CPython
fork and run Python code in the child before exec, and a harness holding gRPC channels then
has children die with SIGABRT ("epoll_wait: Bad file descriptor", grpc/grpc#43055). Without a
preexec_fn the child goes straight to exec.

The kernel sends the signal when the *thread* that forked the child ends, not only the
process: a child started from a short-lived thread would be SIGKILLed when that thread exits.
So `popen_with_parent` forks every child from one spawner thread that lives as long as the
process, whichever thread asks. Elsewhere than Linux there is no such call and the command
line is returned unchanged.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# The guard exits with this when its parent died before prctl took effect, or prctl failed.
ORPHANED_EXIT_CODE = 70


def die_with_parent(argv: list[str]) -> list[str]:
    """`argv` behind the guard, so that the program dies with this process."""
    if not sys.platform.startswith("linux"):
        return argv
    # Run as a script, not `-m`: the guard needs nothing but the standard library, and a child
    # started with a clean environment (an emulator's) may not be able to import this package.
    return [sys.executable, os.path.abspath(__file__), str(os.getpid()), "--", *argv]


# One thread, alive until the interpreter exits, forks every guarded child (see above).
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")


def popen_with_parent(argv: list[str], **popen_kwargs: Any) -> subprocess.Popen[bytes]:
    """`subprocess.Popen(die_with_parent(argv), **popen_kwargs)`, forked from the spawner
    thread, so the child lives until this process dies, whichever thread started it."""
    guarded = die_with_parent(argv)
    return _spawner.submit(lambda: subprocess.Popen(guarded, **popen_kwargs)).result()


def _guard(parent: int, argv: list[str]) -> None:
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != parent:
        os._exit(ORPHANED_EXIT_CODE)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    _guard(int(sys.argv[1]), sys.argv[3:])
