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

The kernel sends the signal when the *thread* that started the child ends, not only the
process: start children from a thread that lives as long as they should (the main thread).
Elsewhere than Linux there is no such call and the command line is returned unchanged.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# The guard exits with this when its parent died before prctl took effect, or prctl failed.
ORPHANED_EXIT_CODE = 70


def die_with_parent(argv: list[str]) -> list[str]:
    """`argv` behind the guard, so that the program dies with this process."""
    if not sys.platform.startswith("linux"):
        return argv
    return [sys.executable, "-m", __name__, str(os.getpid()), "--", *argv]


def _guard(parent: int, argv: list[str]) -> None:
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != parent:
        os._exit(ORPHANED_EXIT_CODE)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    _guard(int(sys.argv[1]), sys.argv[3:])
