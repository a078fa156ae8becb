"""Admission by the tenant's backlog (conveyor.api.admission), read from the store, so every
API replica sees the same: over its quota of tasks waiting to start, or with its oldest waiting
task older than the freshness objective, a tenant's submits are refused with RESOURCE_EXHAUSTED and
a retry-after, store nothing, and are admitted again once its backlog drains. A system of its
own with no workers, so tasks wait until cancelled."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from conveyor.api.admission import REFRESH_SECONDS
from conveyor.api.quotas import RETRY_AFTER
from conveyor.v1 import task_service_pb2 as pb
from conveyor_dev.emulators.backend import start_backend
from conveyor_dev.local.system import LocalSystem
from support import start_system, submit, wait_for

pytestmark = pytest.mark.integration

MAX_QUEUED = 3
MAX_AGE_SECONDS = 3  # more than admission.REFRESH_SECONDS
ADMISSION = {
    "CONVEYOR_TENANT_MAX_QUEUED_TASKS": str(MAX_QUEUED),
    "CONVEYOR_TENANT_MAX_QUEUE_AGE_SECONDS": str(MAX_AGE_SECONDS),
}
LIVE = (pb.TASK_STATE_PENDING, pb.TASK_STATE_QUEUED, pb.TASK_STATE_RUNNING)


@pytest.fixture(scope="module")
def admission_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    with start_backend() as backend:
        system = start_system(
            tmp_path_factory.mktemp("admission"), backend, stack="dev", workers=0, tuning=ADMISSION
        )
        try:
            yield system
        finally:
            system.stop()


def _items(system: LocalSystem) -> int:
    pages = (
        system.backend.client("dynamodb")
        .get_paginator("scan")
        .paginate(TableName=system.table_name, Select="COUNT", ConsistentRead=True)
    )
    return sum(page["Count"] for page in pages)


def _refusal(stub) -> grpc.RpcError | None:
    """A submit's refusal, or None when it was admitted."""
    try:
        submit(stub, "demo.sleep")
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return exc
        raise
    return None


def _drain(stub) -> None:
    for task in list(stub.ListTasks(pb.ListTasksRequest(), timeout=10)):
        if task.state in LIVE:
            stub.CancelTask(pb.CancelTaskRequest(task_id=task.task_id), timeout=10)


def test_a_tenant_at_its_queued_quota_is_refused_and_stores_nothing(admission_system):
    with admission_system.channel("acme") as channel:
        acme = admission_system.stub(channel)
        for _ in range(MAX_QUEUED):
            submit(acme, "demo.sleep")
        # Each replica re-reads a backlog at most every REFRESH_SECONDS: admitted until then.
        refused = wait_for(lambda: _refusal(acme), 30, "a refusal over the queued quota")
        assert "tasks waiting to start" in refused.details()
        assert int(dict(refused.trailing_metadata())[RETRY_AFTER]) >= 1
        items = _items(admission_system)
        assert _refusal(acme) is not None
        assert _items(admission_system) == items  # the refused submit stored nothing
        _drain(acme)


def test_a_tenant_whose_oldest_task_is_too_old_is_refused_until_it_drains(admission_system):
    with admission_system.channel("globex") as channel:
        globex = admission_system.stub(channel)
        assert MAX_AGE_SECONDS > REFRESH_SECONDS
        created = submit(globex, "demo.sleep").task.created_at.ToMilliseconds()  # never starts
        # Older than the objective, and so older than the backlog the API read at that submit
        # (it re-reads one at most every REFRESH_SECONDS, less than the age).
        wait_for(
            lambda: time.time() * 1000 - created > MAX_AGE_SECONDS * 1000,
            30,
            "the task to be older than the objective",
        )
        refused = _refusal(globex)
        assert refused is not None and "oldest task waiting" in refused.details()
        _drain(globex)
        wait_for(lambda: _refusal(globex) is None, 30, "admission once the backlog drained")
