"""conveyor.client against the running system: the README's example, run as written."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conveyor.client import Client, ConveyorError, Submitted
from conveyor.store import MAX_BATCH_TASKS
from conveyor_dev.local.demo_handlers import Sleep

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    match = re.search(r"<!-- client-example -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README lost its client example"
    return match[1]


def test_the_readme_client_example_runs_as_documented(system):
    run = subprocess.run(
        [sys.executable, "-c", _example()],
        env=system.cli_env("acme"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines() == [
        "TASK_STATE_SUCCEEDED True",
        "INVALID_ARGUMENT ['payload.seconds']",
    ]


def test_submit_many_batches_refuses_only_the_bad_task_and_replays_by_key(system):
    count = MAX_BATCH_TASKS + 2  # two SubmitTasks calls
    tasks: list = [Sleep(seconds=0) for _ in range(count)]
    tasks[MAX_BATCH_TASKS] = ("demo.sleep", {"seconds": "soon"})  # in the second batch
    keys = [f"many-{uuid.uuid4().hex}" for _ in range(count)]
    with Client(system.api_address, system.certs.clients["acme"].settings()) as conveyor:
        first = conveyor.submit_many(tasks, idempotency_keys=keys)
        again = conveyor.submit_many(tasks, idempotency_keys=keys)

    refused = first.pop(MAX_BATCH_TASKS)
    assert isinstance(refused, ConveyorError) and "payload.seconds" in refused.details
    assert all(isinstance(s, Submitted) and s.created for s in first)
    assert isinstance(again.pop(MAX_BATCH_TASKS), ConveyorError)
    replays = [s for s in again if isinstance(s, Submitted)]
    assert [s.task.task_id for s in replays] == [s.task.task_id for s in first]  # type: ignore[union-attr]
    assert not any(s.created for s in replays)
