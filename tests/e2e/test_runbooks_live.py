"""Every runbook followed in a local shell: `make local` (conveyor_dev.local.run) runs as a real
process, and each runbook's ```bash blocks that are not AWS-only run in order in one bash, from a
directory laid out as the repository root, with `source runbooks/env.sh` as their first step.
A block fails the runbook when it exits non-zero (set -e, pipefail) or prints a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conveyor_observability.paths import REPO_ROOT
from conveyor_observability.runbooks import Runbook, load_runbooks
from support import wait_for

RUNBOOKS = {runbook.alert: runbook for runbook in load_runbooks()}


def _bash(cwd: Path, script: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("CONVEYOR_STACK", None)
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def shell_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory like the repository root whose `.local` is a live `make local`, with a dead
    task in the DLQ and a long task running (what the runbooks look for)."""
    root = tmp_path_factory.mktemp("oncall")
    for name in ("runbooks", "services", ".git"):
        (root / name).symlink_to(REPO_ROOT / name)
    out = open(root / "run.out", "w")  # noqa: SIM115 - open for the fixture's whole life
    run = subprocess.Popen(
        [sys.executable, "-m", "conveyor_dev.local.run", "--tasks", "20", "--rate", "4"],
        cwd=root,
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        wait_for(lambda: (root / ".local" / "conveyor.env").exists(), 120, "make local's env file")
        seeded = _bash(
            root,
            "set -e; source runbooks/env.sh\n"
            "conveyor submit demo.poison --payload '{}' --max-attempts 1 --json >/dev/null\n"
            "conveyor submit demo.sleep --payload '{\"seconds\": 900}' --json >/dev/null\n",
        )
        assert seeded.returncode == 0, seeded.stderr

        def seeded_states() -> bool:
            listed = _bash(root, "source runbooks/env.sh; conveyor list --json --limit 0")
            states = {task["state"] for task in json.loads(listed.stdout or "[]")}
            return {"DEAD", "RUNNING"} <= states

        wait_for(seeded_states, 120, "a DEAD and a RUNNING task", every=2)
        yield root
    finally:
        run.send_signal(signal.SIGINT)
        try:
            run.wait(120)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
        out.close()


def _local_script(runbook: Runbook) -> str:
    steps = ["set -e -o pipefail"]
    for block in runbook.code("bash"):
        if block.runs_in("local"):
            steps += [f"echo '### {runbook.alert} line {block.line}'", block.text]
    return "\n".join(steps) + "\n"


@pytest.mark.parametrize("alert", sorted(RUNBOOKS))
def test_runbook_runs_in_a_local_shell(alert: str, shell_root: Path):
    runbook = RUNBOOKS[alert]
    done = _bash(shell_root, _local_script(runbook))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "Traceback" not in output and "command not found" not in output, output[-4000:]
    assert "local system from .local/conveyor.env" in done.stderr
    blocks = [b for b in runbook.code("bash") if b.runs_in("local")]
    assert done.stdout.count("### ") == len(blocks)


def test_a_component_killed_by_a_runbook_is_restarted_and_said_so(shell_root: Path):
    """The runbooks' local mitigations stop processes; the supervisor replaced each of them."""
    test_runbook_runs_in_a_local_shell("ConveyorTasksNotConsumed", shell_root)
    log = next((shell_root / ".local").glob("run-*/logs/supervisor.log"))
    restarted = wait_for(lambda: log.read_text().splitlines(), 30, "a restart in supervisor.log")
    assert any("worker-" in line and "started again" in line for line in restarted)
