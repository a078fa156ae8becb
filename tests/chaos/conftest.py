"""Fixtures of the chaos tier: a system of its own per test (kills would disturb a shared one)
whose workers record executions and effects in the outside oracle's sink."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from chaos_support import Oracle
from conveyor_dev.emulators.backend import start_backend
from conveyor_dev.local import oracle
from conveyor_dev.local.system import LocalSystem
from support import FAST_RECOVERY, TENANTS

_REPORTS: list[str] = []


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Adds a line to the tier's summary at the end of the run (executions seen, etc.)."""
    return lambda text: _REPORTS.append(f"{request.node.name}: {text}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _REPORTS:
        terminalreporter.section("chaos: what the outside oracle saw")
        for line in _REPORTS:
            terminalreporter.write_line(line)


@pytest.fixture
def with_oracle(tmp_path: Path, aws_action_log: Path) -> Iterator[Oracle]:
    """An emulator and a provisioned system with nothing started yet; every process it starts
    runs the oracle's handlers and writes to `sink` (and records its AWS actions for the IAM
    check)."""
    sink = tmp_path / "oracle-sink.jsonl"
    tuning = {**FAST_RECOVERY, **oracle.worker_env(sink)}
    with start_backend() as backend:
        system = LocalSystem.provision(
            tmp_path, backend, TENANTS, tuning=tuning, action_log=aws_action_log
        )
        try:
            yield Oracle(system, sink)
        finally:
            system.stop()
