"""Shared infra fixtures: each stack's program runs once per test session, under Pulumi's mocks,
in its own child process (Pulumi's runtime state is process-global), all stacks in parallel."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conveyor_dev.emulators.declared import Declaration, declare
from stack_support import STACKS, stack_file


@pytest.fixture(scope="session")
def declarations() -> dict[str, Declaration]:
    with ThreadPoolExecutor(max_workers=len(STACKS)) as pool:
        return dict(zip(STACKS, pool.map(declare, STACKS), strict=True))


@pytest.fixture(scope="session")
def stack_files() -> dict[str, dict[str, Any]]:
    """Each stack's `config:` block as written in Pulumi.<stack>.yaml."""
    return {stack: stack_file(stack) for stack in STACKS}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The IAM check reads the AWS actions every armed tier recorded: it runs last."""
    last = [item for item in items if item.path.name == "test_iam_exercised.py"]
    items[:] = [item for item in items if item not in last] + last
