"""Real processes killed mid-flight: nothing is lost and every effect is applied exactly once.

Each test runs its own emulator and system (the kills would disturb a shared one) with short
leases, so recovery takes seconds. The effect ledger (one item per task and effect name) is
read straight from DynamoDB: the proof is in the data, not in the logs.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import grpc
import pytest
from conveyor import schema
from conveyor.local.backend import start_backend
from conveyor.local.system import LocalSystem
from conveyor.v1 import task_service_pb2 as pb
from support import (
    FAST_RECOVERY,
    TENANTS,
    get,
    path_of,
    submit,
    wait_for,
    wait_state,
    wait_terminal,
)

pytestmark = pytest.mark.chaos


@pytest.fixture
def fresh(tmp_path, aws_action_log) -> Iterator[LocalSystem]:
    """An emulator and provisioned system with nothing started yet (its services record their
    AWS actions for the IAM check)."""
    with start_backend() as backend:
        system = LocalSystem.provision(
            tmp_path, backend, TENANTS, tuning=FAST_RECOVERY, action_log=aws_action_log
        )
        try:
            yield system
        finally:
            system.stop()


def effects(system: LocalSystem, task_id: str) -> list[dict]:
    ddb = system.backend.client("dynamodb")
    return ddb.query(
        TableName=system.table_name,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": schema.effect_pk(task_id)}},
        ConsistentRead=True,
    )["Items"]


def test_sigkilled_worker_task_completes_with_its_effect_applied_once(fresh: LocalSystem):
    fresh.spawn("api", "api")
    fresh.spawn("relay", "relay")
    fresh.spawn("worker-1", "worker")
    fresh.wait_ready()
    with fresh.channel("acme") as channel:
        stub = fresh.stub(channel)
        ids = [
            submit(stub, "demo.sleep", {"seconds": 3, "effect_first": True}).task.task_id
            for _ in range(6)
        ]
        # Kill once some tasks have applied their effect but none has completed.
        wait_for(lambda: sum(bool(effects(fresh, i)) for i in ids) >= 2, 30, "effects applied")
        assert not any(get(stub, i).task.state == pb.TASK_STATE_SUCCEEDED for i in ids)
        fresh.signal("worker-1", signal.SIGKILL)
        fresh.procs["worker-1"].popen.wait(10)

        fresh.spawn("worker-2", "worker")
        tasks = [wait_terminal(stub, i, timeout=60) for i in ids]

        assert [t.state for t in tasks] == [pb.TASK_STATE_SUCCEEDED] * len(ids)
        for task in tasks:
            ledger = effects(fresh, task.task_id)
            assert len(ledger) == 1, f"{task.task_id}: effect applied {len(ledger)} times"
            if task.attempts == 2:  # the killed attempt applied it; the retry must not
                assert ledger[0]["sk"]["S"] == "slept"
                assert ledger[0]["owner"]["S"].startswith("worker-1/")  # recorded by attempt 1
                assert b'"applied_now": false' in task.result
                claims = [e.detail for e in get(stub, task.task_id).events if "claimed" in e.detail]
                assert claims == ["claimed by worker-1", "claimed by worker-2"]
        assert any(t.attempts == 2 for t in tasks), "the kill interrupted no task"


def test_api_killed_between_commit_and_send_is_saved_by_the_relay(fresh: LocalSystem):
    api = fresh.spawn("api", "api", {"CONVEYOR_FAILPOINTS": "api.after_commit=kill"})
    fresh.spawn("relay", "relay")
    fresh.spawn("worker-1", "worker")
    fresh.wait_ready()
    key = "crash-between-commit-and-send"
    with fresh.channel("acme") as channel:
        stub = fresh.stub(channel)
        with pytest.raises(grpc.RpcError) as err:
            submit(stub, "demo.sleep", {"seconds": 0.1}, key=key)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert api.popen.wait(10) == -signal.SIGKILL

    # The client retries with the same key against a healthy API: same task, not a new one.
    fresh.spawn("api", "api")
    fresh.wait_ready()
    with fresh.channel("acme") as channel:
        stub = fresh.stub(channel)
        retry = submit(stub, "demo.sleep", {"seconds": 0.1}, key=key)
        assert not retry.created
        task = wait_terminal(stub, retry.task.task_id, timeout=30)

        assert task.state == pb.TASK_STATE_SUCCEEDED
        history = get(stub, task.task_id)
        assert "sent by the outbox relay" in [e.detail for e in history.events]
        assert path_of(history) == ["PENDING", "QUEUED", "RUNNING", "SUCCEEDED"]


def test_sigterm_drains_inflight_work_and_stops_polling(fresh: LocalSystem):
    fresh.start(workers=1)
    with fresh.channel("acme") as channel:
        stub = fresh.stub(channel)
        running = submit(stub, "demo.sleep", {"seconds": 3}).task.task_id
        wait_state(stub, running, {pb.TASK_STATE_RUNNING}, timeout=20)

        fresh.signal("worker-1", signal.SIGTERM)
        time.sleep(0.5)  # let the signal land before the next submit
        later = submit(stub, "demo.sleep", {"seconds": 0.1}).task.task_id

        assert fresh.procs["worker-1"].popen.wait(15) == 0
        assert get(stub, running).task.state == pb.TASK_STATE_SUCCEEDED
        assert get(stub, later).task.state in (pb.TASK_STATE_QUEUED, pb.TASK_STATE_PENDING)

        fresh.spawn("worker-2", "worker")
        assert wait_terminal(stub, later, timeout=30).state == pb.TASK_STATE_SUCCEEDED


def test_grace_period_over_hands_the_task_back(fresh: LocalSystem):
    fresh.start(workers=1, extra={"CONVEYOR_SHUTDOWN_GRACE_SECONDS": "1"})
    with fresh.channel("acme") as channel:
        stub = fresh.stub(channel)
        # On its only attempt: handing back must not use that attempt up.
        task_id = submit(stub, "demo.sleep", {"seconds": 4}, max_attempts=1).task.task_id
        wait_state(stub, task_id, {pb.TASK_STATE_RUNNING}, timeout=20)

        started = time.monotonic()
        fresh.signal("worker-1", signal.SIGTERM)
        assert fresh.procs["worker-1"].popen.wait(10) == 0
        assert time.monotonic() - started < 5
        handed_back = get(stub, task_id)
        assert handed_back.task.state == pb.TASK_STATE_QUEUED
        assert handed_back.events[-1].detail == "worker shut down before the task finished"

        fresh.spawn("worker-2", "worker")
        task = wait_terminal(stub, task_id, timeout=30)
        assert task.state == pb.TASK_STATE_SUCCEEDED
        assert task.attempts == 1  # the interrupted attempt was handed back, not counted
