from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conveyor.v1 import task_service_pb2_grpc as pb_grpc
from conveyor_dev.emulators.backend import start_backend
from conveyor_dev.local.system import LocalSystem
from support import start_system


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory, aws_action_log: Path) -> Iterator[LocalSystem]:
    """API, relay and two workers as real processes, on a backend of their own: the relay
    and workers act on every task in their table, so no other tier may share it. They record
    their AWS actions for the IAM check."""
    with start_backend() as backend:
        system = start_system(
            tmp_path_factory.mktemp("integration"),
            backend,
            stack="dev",
            action_log=aws_action_log,
        )
        try:
            yield system
        finally:
            codes = system.stop()
            assert all(code == 0 for code in codes.values()), f"unclean shutdown: {codes}"


@pytest.fixture(scope="session")
def acme(system: LocalSystem) -> Iterator[pb_grpc.TaskServiceStub]:
    with system.channel("acme") as channel:
        yield system.stub(channel)


@pytest.fixture(scope="session")
def globex(system: LocalSystem) -> Iterator[pb_grpc.TaskServiceStub]:
    with system.channel("globex") as channel:
        yield system.stub(channel)
