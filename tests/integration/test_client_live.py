"""conveyor.client against the running system: the README's example, run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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
