"""Fixtures for the observability checks: promtool (skipped with a reason when missing; CI
installs it) and the SLO spec."""

from __future__ import annotations

import pytest
from conveyor_observability.promtool import promtool_path
from conveyor_observability.spec import Spec, load_spec

PROMTOOL_MISSING = (
    "promtool not found on PATH: install Debian's 'prometheus' package (.ci/run does in CI)"
)


@pytest.fixture(scope="session")
def promtool() -> str:
    path = promtool_path()
    if path is None:
        pytest.skip(PROMTOOL_MISSING)
    return path


@pytest.fixture(scope="session")
def spec() -> Spec:
    return load_spec()
