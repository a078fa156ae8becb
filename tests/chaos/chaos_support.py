"""Helpers of the chaos tier (imported as `chaos_support`; a test module cannot import a
`conftest`, whose name every tier shares)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from conveyor_dev.local import oracle
from conveyor_dev.local.system import LocalSystem


@dataclass(frozen=True)
class Oracle:
    system: LocalSystem
    sink: Path

    def observed(self) -> oracle.Observed:
        return oracle.read(self.sink)
