"""Per-tenant quotas end to end (conveyor.api.quotas): over its submit rate or its streams, a
tenant is refused with RESOURCE_EXHAUSTED and a `retry-after`, nothing is stored, and another
tenant is served as before. A system of its own, with small quotas and no workers (so no task
ever leaves PENDING and nothing but a submit changes the table)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from conveyor.api.quotas import RETRY_AFTER
from conveyor.v1 import task_service_pb2 as pb
from conveyor_dev.emulators.backend import start_backend
from conveyor_dev.local.system import LocalSystem
from support import get, start_system, submit

pytestmark = pytest.mark.integration

BURST = 3
STREAMS = 2
QUOTAS = {
    "CONVEYOR_TENANT_SUBMITS_PER_SECOND": "0.01",  # no token comes back during the test
    "CONVEYOR_TENANT_SUBMIT_BURST": str(BURST),
    "CONVEYOR_TENANT_MAX_STREAMS": str(STREAMS),
}


@pytest.fixture(scope="module")
def quota_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    with start_backend() as backend:
        system = start_system(
            tmp_path_factory.mktemp("quotas"), backend, stack="dev", workers=0, tuning=QUOTAS
        )
        try:
            yield system
        finally:
            system.stop()


@pytest.fixture(scope="module")
def pending(quota_system: LocalSystem) -> dict[str, str]:
    """A task of each tenant, PENDING for good (no workers), so its watches stay open. It
    spends one of the tenant's BURST submits."""
    tasks = {}
    for tenant in ("acme", "globex"):
        with quota_system.channel(tenant) as channel:
            tasks[tenant] = submit(quota_system.stub(channel), "demo.sleep").task.task_id
    return tasks


def _items(system: LocalSystem) -> int:
    ddb = system.backend.client("dynamodb")
    pages = ddb.get_paginator("scan").paginate(
        TableName=system.table_name, Select="COUNT", ConsistentRead=True
    )
    return sum(page["Count"] for page in pages)


def _messages(system: LocalSystem) -> int:
    attrs = system.backend.client("sqs").get_queue_attributes(
        QueueUrl=system.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"])


def _retry_after(error: grpc.RpcError) -> int:
    trailers = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
    return int(trailers[RETRY_AFTER])


def test_a_submit_over_the_rate_is_refused_with_retry_after_and_stores_nothing(
    quota_system, pending
):
    with quota_system.channel("acme") as acme_channel, quota_system.channel("globex") as other:
        acme, globex = quota_system.stub(acme_channel), quota_system.stub(other)
        admitted = [submit(acme, "demo.sleep") for _ in range(BURST - 1)]
        assert all(r.created for r in admitted)
        items, messages = _items(quota_system), _messages(quota_system)

        with pytest.raises(grpc.RpcError) as refused:
            submit(acme, "demo.sleep")

        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _retry_after(refused.value) >= 1
        assert _items(quota_system) == items  # no task, payload or idempotency record
        assert _messages(quota_system) == messages
        assert submit(globex, "demo.sleep").created  # another tenant's own quota


def test_a_tenant_over_its_streams_is_refused_and_another_tenant_is_served(quota_system, pending):
    mine, theirs = pending["acme"], pending["globex"]
    with quota_system.channel("acme") as acme_channel, quota_system.channel("globex") as other:
        acme, globex = quota_system.stub(acme_channel), quota_system.stub(other)
        held = []
        try:
            for _ in range(STREAMS):  # opened, then never read again
                stream = acme.WatchTask(pb.WatchTaskRequest(task_id=mine), timeout=60)
                next(stream)
                held.append(stream)

            one_more = acme.WatchTask(pb.WatchTaskRequest(task_id=mine), timeout=60)
            with pytest.raises(grpc.RpcError) as refused:
                next(one_more)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert _retry_after(refused.value) >= 1

            watch = globex.WatchTask(pb.WatchTaskRequest(task_id=theirs), timeout=60)
            assert next(watch).task_id == theirs
            watch.cancel()
            answered = sum(get(globex, theirs).task.task_id == theirs for _ in range(20))
            assert answered == 20
        finally:
            for stream in held:
                stream.cancel()


def _admitted(stub: object, task_id: str) -> object:
    """A watch of `task_id` with its first message read, once the tenant's quota admits it: a
    place given back by a cancel is freed at the server's next poll of that watch."""
    for _ in range(400):
        stream = stub.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=60)  # type: ignore[attr-defined]
        try:
            next(stream)
            return stream
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            time.sleep(0.05)
    pytest.fail("a stream's place was never given back")


def test_streams_ended_by_the_client_give_their_places_back(quota_system, pending):
    """Streams the client cancels and one that ends by an error count no more: the tenant
    opens its STREAMS again after them, round after round."""
    mine = pending["acme"]
    with quota_system.channel("acme") as channel:
        acme = quota_system.stub(channel)
        for _ in range(3):
            watching = _admitted(acme, mine)
            # A watch of no task ends NOT_FOUND: an exception inside the stream.
            with pytest.raises(grpc.RpcError) as missing:
                _admitted(acme, "0" * 32)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            watching.cancel()
            opened = [_admitted(acme, mine) for _ in range(STREAMS)]
            for stream in opened:
                stream.cancel()
