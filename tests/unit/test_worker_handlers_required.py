"""The service image ships no handlers: a worker started without CONVEYOR_TASK_MODULES refuses
to start with a configuration error that says what to set, instead of running with none."""

from __future__ import annotations

import os
import subprocess
import sys


def test_a_worker_without_handlers_exits_2_naming_the_setting():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(
        {
            "CONVEYOR_TABLE_NAME": "conveyor-tasks",
            "CONVEYOR_QUEUE_URL": "http://127.0.0.1:9/000000000000/tasks.fifo",
            "CONVEYOR_DLQ_URL": "http://127.0.0.1:9/000000000000/tasks-dlq.fifo",
            "CONVEYOR_METRICS_LISTEN": "127.0.0.1:0",
            "AWS_REGION": "eu-west-1",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "conveyor.worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "CONVEYOR_TASK_MODULES: no task modules named" in result.stderr + result.stdout
