"""Child processes that die with the harness that started them.

A harness killed with SIGKILL (an OOM kill, a CI timeout, `kill -9`) runs no cleanup code, so
without this its emulators and service processes would keep running: holding ports, memory and,
for a worker, SQS messages. `die_with_parent()` returns a `preexec_fn` for `subprocess.Popen`
that, in the child between fork and exec, asks the Linux kernel (prctl PR_SET_PDEATHSIG) to
SIGKILL the child when its parent dies. The setting survives exec (of a non-setuid program),
so it covers `java` and other emulators' interpreters too.

The kernel sends the signal when the *thread* that forked the child ends, not only the
process: start children from a thread that lives as long as they should (the main thread).

Elsewhere than Linux there is no such call and `die_with_parent()` returns None (no hook).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# The child exits with this when its parent died before prctl took effect.
ORPHANED_EXIT_CODE = 70


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    # Looked up once in the parent: the child, after fork, only calls a function pointer.
    return ctypes.CDLL(None, use_errno=True).prctl


_PRCTL = _load_prctl()


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child die with this process (None where unsupported)."""
    if _PRCTL is None:
        return None
    parent = os.getpid()
    prctl = _PRCTL

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(ORPHANED_EXIT_CODE)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(ORPHANED_EXIT_CODE)

    return preexec
