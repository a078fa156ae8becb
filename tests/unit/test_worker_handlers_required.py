"""The service image ships no handlers: an API or a worker started without
CONVEYOR_TASK_MODULES refuses to start with a configuration error that says what to set,
instead of serving or running no task type."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

COMMON = {
    "CONVEYOR_TABLE_NAME": "conveyor-tasks",
    "CONVEYOR_QUEUE_URL": "http://127.0.0.1:9/000000000000/tasks.fifo",
    "CONVEYOR_DLQ_URL": "http://127.0.0.1:9/000000000000/tasks-dlq.fifo",
    "CONVEYOR_QUEUE_URL_HIGH": "http://127.0.0.1:9/000000000000/tasks-high.fifo",
    "CONVEYOR_DLQ_URL_HIGH": "http://127.0.0.1:9/000000000000/tasks-high-dlq.fifo",
    "CONVEYOR_METRICS_LISTEN": "127.0.0.1:0",
    "AWS_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
}
API = {
    "CONVEYOR_API_LISTEN": "127.0.0.1:0",
    "CONVEYOR_HEALTH_LISTEN": "127.0.0.1:0",
    **{f"CONVEYOR_TLS_{part}_PEM": "unread" for part in ("CA", "CERT", "KEY")},
}


@pytest.mark.parametrize(("module", "own"), [("conveyor.worker", {}), ("conveyor.api", API)])
def test_a_service_without_task_modules_exits_2_naming_the_setting(module, own):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update({**COMMON, **own})
    result = subprocess.run(
        [sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "CONVEYOR_TASK_MODULES: no task modules named" in result.stderr + result.stdout
