"""The drill's report: one row per alert a fault caused, collected by the tests and printed at
the end of the run (pytest's terminal summary, so `make drill` shows it with or without -s, and
a failed run still shows the rows it got)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class AlertRow:
    fault: str
    alert: str
    receiver: str
    fired_after: float  # seconds from `clock` to the receiver's firing notification
    promised: float  # what the rule promises from `clock` (see test_drill._promised_seconds)
    clock: str  # what fired_after is measured from
    resolved_after: float | None = None  # seconds from the fix to the resolved notification


@dataclass
class DrillTable:
    rows: list[AlertRow]

    def add(self, **fields: object) -> None:
        self.rows.append(AlertRow(**fields))  # type: ignore[arg-type]


_ROWS = pytest.StashKey[list[AlertRow]]()
_COLUMNS = (
    "fault",
    "alert",
    "receiver",
    "fired after (s)",
    "resolved after (s)",
    "promised (s)",
    "clock from",
)


@pytest.fixture(scope="session")
def drill_table(request: pytest.FixtureRequest) -> DrillTable:
    """`add(...)` an AlertRow's fields per alert a test proved; the summary prints them all."""
    return DrillTable(request.config.stash.setdefault(_ROWS, []))


def _cells(row: AlertRow) -> tuple[str, ...]:
    if row.resolved_after is None:
        resolved = "-"
    elif row.resolved_after < 0:  # an alert that may fire, and was over before the fix
        resolved = f"{row.resolved_after:.1f} (before the fix)"
    else:
        resolved = f"{row.resolved_after:.1f}"
    return (
        row.fault,
        row.alert,
        row.receiver,
        f"{row.fired_after:.1f}",
        resolved,
        f"{row.promised:.0f}",
        row.clock,
    )


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    rows = config.stash.get(_ROWS, [])
    if not rows:
        return
    table = [_COLUMNS, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    terminalreporter.section("drill: alerts per fault")
    for i, line in enumerate(table):
        terminalreporter.write_line(
            "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        )
        if i == 0:
            terminalreporter.write_line("  ".join("-" * w for w in widths))
