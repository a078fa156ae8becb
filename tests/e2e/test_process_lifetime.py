"""`make local` SIGKILLed (an OOM kill, a CI timeout): its emulator, services and Prometheus
die with it instead of running on as orphans (conveyor_dev.local.lifetime)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import wait_for

pytestmark = pytest.mark.e2e


def _descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (Linux)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                for child in map(int, children.read_text().split()):
                    if child not in found:
                        found.add(child)
                        todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for its (new) parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_sigkilled_local_run_takes_its_emulator_and_services_with_it(tmp_path):
    out = tmp_path / "stdout"
    with open(out, "w") as stdout:
        parent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "conveyor_dev.local.run",
                "--duration",
                "120",
                "--workdir",
                tmp_path,
            ],
            stdout=stdout,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1"},
        )
    children: set[int] = set()
    try:
        wait_for(
            lambda: "Conveyor is running" in out.read_text() or parent.poll() is not None,
            120,
            "make local's services to be up",
        )
        assert parent.poll() is None, out.read_text()[-3000:]
        children = _descendants(parent.pid)
        # The emulator, the API, the relay and two workers (and Prometheus when installed).
        assert len(children) >= 5, children
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        wait_for(
            lambda: not any(_alive(pid) for pid in children),
            30,
            f"the children of a SIGKILLed parent to die: {sorted(filter(_alive, children))}",
        )
    finally:
        for pid in (*children, parent.pid):  # only what this test started
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        parent.wait()
