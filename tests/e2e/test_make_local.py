"""`make local`'s program, run as a user runs it: exit 0, every demo task terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_local_run_settles_every_task_and_exits_zero(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor_dev.local.run",
            "--duration",
            # Long enough for the burn-rate pages to see the demo (with one task in ten poison,
            # ConveyorTaskSuccessBudgetBurnPage fires within it; in 20 s nothing could).
            "60",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1"},
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    out = run.stdout
    submitted = int(re.search(r"submitted\s*│\s*(\d+)", out).group(1))
    settled = sum(
        int(re.search(rf"{state}\s*│\s*(\d+)", out).group(1))
        for state in ("succeeded", "failed", "dead", "cancelled", "expired")
    )
    assert submitted > 50
    assert settled == submitted
    assert re.search(r"lost or not terminal\s*│\s*0\b", out)
    # The timed tasks (demo.TIMED): three delayed ones ran; the fourth delayed one, due to
    # expire a millisecond after its due time, did not.
    assert re.search(r"delayed tasks succeeded \(submitted\)\s*│\s*3 \(4\)", out)
    assert re.search(r"expired\s*│\s*1\b", out)
    assert re.search(r"tasks with a start_by deadline\s*│\s*3\b", out)
    # The demo's schedule fires a task a minute: each slot once (ids are one per slot), so over
    # the run's time at most two slots (it starts before the load, and the load is 45 s).
    fired = re.search(r"tasks fired\s*│\s*(\d+)", out)
    assert fired and int(fired.group(1)) <= 2
    # Two tenants share the load (conveyor_dev.local.demo.SECOND_TENANT_SHARE).
    tenants = re.search(r"submitted by tenant\s*│\s*demo=(\d+), demo-b=(\d+)", out)
    assert tenants and int(tenants.group(1)) > 0 and int(tenants.group(2)) > 0
    # Both priority lanes carry some of it (conveyor_dev.local.demo.HIGH_LANE_SHARE), each
    # with its tasks (succeeded) and its end-to-end p50.
    for lane in ("high", "default"):
        tasks = re.search(rf"{lane} lane: tasks \(succeeded\)\s*│\s*(\d+) \((\d+)\)", out)
        assert tasks and int(tasks.group(2)) > 0, out[-3000:]
        assert re.search(rf"{lane} lane: end-to-end p50 \(succeeded\)\s*│\s*\d+ ms", out)
    assert "api=0, relay=0, worker-1=0, worker-2=0" in out
    # Issue 17: the healthy demo at its default rate pages nothing, by the shipped rules in make
    # local's Prometheus (its poison tasks are placed, conveyor_dev.local.demo.POISON_EVERY).
    assert re.search(r"alerts fired: page\s*│\s*none\b", out), out[-3000:]
    assert (tmp_path / "conveyor.env").read_text().count("export CONVEYOR_") >= 5
