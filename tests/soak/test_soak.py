"""The CI soak: `make soak TASKS=200`, the real program, judged by its own report and exit code
(its verdict comes from the client's record, the tenant's listing and the outside oracle)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.soak

TASKS = 200


@pytest.mark.timeout(1500)
def test_200_tasks_under_kills_and_fault_windows_lose_and_duplicate_nothing(tmp_path):
    report_path = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor_dev.local.soak",
            "--tasks",
            str(TASKS),
            "--timeout",
            "1200",
            "--workdir",
            str(tmp_path),
            "--report",
            str(report_path),
        ],
        capture_output=True,
        text=True,
        timeout=1400,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"},
    )
    print(result.stdout[-6000:])
    report = json.loads(report_path.read_text())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert report["failed"] is False
    assert report["acknowledged"] == TASKS
    assert sum(report["by_state"].values()) == TASKS
    for name in ("lost", "phantom", "stuck", "duplicate_effects", "missing_effects"):
        assert not report[name], name
    assert sum(report["kills"].values()) >= 5, "the soak killed (almost) nothing"
    assert sum(report["fault_windows"].values()) >= 1, "the soak opened no fault window"
    schedule = report["schedule"]  # counted from the oracle's sink, not the system's records
    assert schedule["fired_once"] >= 1, schedule
    assert schedule["calm_slots"] >= 4, schedule  # the calm stretch after the chaos
    assert schedule["calm_fired_once"] == schedule["calm_slots"], schedule
    assert (schedule["doubled"], schedule["missed"], schedule["unexpected"]) == (0, 0, 0), schedule
    assert schedule["early"] == 0, schedule
