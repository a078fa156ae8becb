"""AWS brownouts injected at the boundary (conveyor_dev.inject.faults) into real processes: a long
DynamoDB hang, a long throttling spell, and a lost response on the effect write. Executions and
effects are counted in the outside oracle's sink."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import grpc
import pytest
from chaos_support import Oracle
from conveyor.v1 import task_service_pb2 as pb
from conveyor_dev.local.oracle import TASK_TYPE
from conveyor_dev.local.scrape import total
from support import get, submit, wait_for, wait_state, wait_terminal

pytestmark = pytest.mark.chaos

BREAKER_OPEN = 2
SHARDS = 1024


def group(task_id: str) -> int:
    """The message group shard of a task (conveyor.queue.TaskQueue.group_id)."""
    return int(task_id[-8:], 16) % SHARDS


def details(stub, task_id: str) -> list[str]:
    return [e.detail for e in get(stub, task_id).events]


@pytest.mark.timeout(300)
def test_a_25s_dynamodb_hang_with_8_tasks_in_flight_claims_and_runs_each_once(
    with_oracle: Oracle, tmp_path, report: Callable[[str], None]
):
    system = with_oracle.system
    hang = tmp_path / "dynamodb-hangs"
    system.start(
        workers=2,
        extra={
            "CONVEYOR_AWS_FAULTS": f"dynamodb.*=hang while={hang}",
            "CONVEYOR_MESSAGE_GROUP_SHARDS": str(SHARDS),
        },
    )
    with system.channel("acme") as channel:
        stub = system.stub(channel)
        # Eight tasks, as many as the two workers' slots, outliving the hang, each in a message
        # group of its own (FIFO would hold a second task of a group back until the first ends).
        ids: list[str] = []
        while len(ids) < 8:
            task_id = submit(stub, TASK_TYPE, {"seconds": 35}).task.task_id
            if group(task_id) in {group(i) for i in ids}:
                stub.CancelTask(pb.CancelTaskRequest(task_id=task_id), timeout=10)
            else:
                ids.append(task_id)
        for task_id in ids:
            wait_state(stub, task_id, {pb.TASK_STATE_RUNNING}, timeout=60)
        hang.touch()
        time.sleep(25)  # the outage itself: every DynamoDB call of every process hangs
        hang.unlink()
        tasks = [wait_terminal(stub, i, timeout=120) for i in ids]
        history = {i: details(stub, i) for i in ids}

    seen = with_oracle.observed()
    report(seen.summary(ids))
    assert [t.state for t in tasks] == [pb.TASK_STATE_SUCCEEDED] * len(ids)
    claims = {i: sum(d.startswith("claimed") for d in h) for i, h in history.items()}
    assert claims == dict.fromkeys(ids, 1), f"a second claim: {history}"
    assert [t.attempts for t in tasks] == [1] * len(ids)
    assert {i: seen.executions[i] for i in ids} == dict.fromkeys(ids, 1), "a duplicate execution"
    assert {i: seen.applied(i) for i in ids} == dict.fromkeys(ids, 1)
    assert seen.duplicate_effects() == {}


@pytest.mark.timeout(300)
def test_30s_of_throttling_opens_the_breaker_loses_nothing_and_drains_within_twice_that(
    with_oracle: Oracle, tmp_path, report: Callable[[str], None]
):
    outage = 30.0
    system = with_oracle.system
    throttled = tmp_path / "dynamodb-throttles"
    system.start(workers=2, extra={"CONVEYOR_AWS_FAULTS": f"dynamodb.*=throttle while={throttled}"})
    api_metrics = [system.procs["api"].metrics_url]
    keys: dict[str, str] = {}  # idempotency key -> task id ("" until acknowledged)

    def try_submit(key: str) -> bool:
        try:
            keys[key] = submit(stub, TASK_TYPE, {"seconds": 0.5}, key=key, timeout=3).task.task_id
            return True
        except grpc.RpcError:
            keys.setdefault(key, "")
            return False

    with system.channel("acme") as channel:
        stub = system.stub(channel)
        for _ in range(10):  # a backlog in flight when the throttling starts
            assert try_submit(uuid.uuid4().hex)
        throttled.touch()
        started = time.monotonic()
        breaker_opened = False
        while time.monotonic() < started + outage:  # clients keep submitting throughout
            try_submit(uuid.uuid4().hex)
            state = total(api_metrics, "conveyor_circuit_breaker_state", dependency="dynamodb")
            breaker_opened = breaker_opened or state == BREAKER_OPEN
            time.sleep(0.5)
        throttled.unlink()
        ended = time.monotonic()
        for key in [k for k, task_id in keys.items() if not task_id]:  # clients retry
            wait_for(lambda k=key: try_submit(k), outage, f"submit {key} to be accepted")
        tasks = [wait_terminal(stub, i, timeout=2 * outage) for i in keys.values()]
        drained = time.monotonic() - ended
        listed = [t.idempotency_key for t in stub.ListTasks(pb.ListTasksRequest(), timeout=30)]

    seen = with_oracle.observed()
    report(
        f"drained {drained:.1f} s after {outage:.0f} s of throttling; "
        + seen.summary(list(keys.values()))
    )
    assert breaker_opened, "the API's DynamoDB breaker never opened during the throttling"
    assert [t.state for t in tasks] == [pb.TASK_STATE_SUCCEEDED] * len(keys)
    assert sorted(listed) == sorted(keys), "one task per key, none lost, none extra"
    assert {i: seen.applied(i) for i in keys.values()} == dict.fromkeys(keys.values(), 1)
    assert seen.duplicate_effects() == {}
    assert drained <= 2 * outage


def test_a_lost_response_on_the_effect_write_still_applies_the_effect_once(
    with_oracle: Oracle, report: Callable[[str], None]
):
    """The effect is the worker's one transaction for the task (the claim and the completion
    are updates): it lands and its response is lost, so botocore retries it."""
    system = with_oracle.system
    system.spawn("api", "api")
    system.spawn("relay", "relay")
    system.spawn(
        "worker-1",
        "worker",
        {"CONVEYOR_AWS_FAULTS": "dynamodb.TransactWriteItems=lost count=1"},
    )
    system.wait_ready()
    with system.channel("acme") as channel:
        stub = system.stub(channel)
        task_id = submit(stub, TASK_TYPE, {"seconds": 0.1}, max_attempts=1).task.task_id
        task = wait_terminal(stub, task_id, timeout=60)

    seen = with_oracle.observed()
    report(seen.summary([task_id]))
    assert task.state == pb.TASK_STATE_SUCCEEDED, task.last_error
    assert b'"applied_now": true' in task.result  # the attempt that wrote it was told so
    assert (seen.executions[task_id], seen.decisions[task_id], seen.applied(task_id)) == (1, 1, 1)
