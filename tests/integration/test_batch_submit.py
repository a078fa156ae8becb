"""SubmitTasks: up to 33 tasks in one transaction, each answered on its own (created, replayed
or refused), refused ones storing nothing, and the whole request safe to retry."""

from __future__ import annotations

import json
import uuid

import grpc
import pytest
from conveyor.store import MAX_BATCH_TASKS
from conveyor.v1 import task_service_pb2 as pb
from google.rpc import code_pb2
from support import wait_terminal

pytestmark = pytest.mark.integration


def _task(key: str, seconds: float = 0.01, task_type: str = "demo.sleep") -> pb.SubmitTaskRequest:
    return pb.SubmitTaskRequest(
        task_type=task_type,
        payload=json.dumps({"seconds": seconds}).encode(),
        idempotency_key=key,
    )


def _outcomes(response: pb.SubmitTasksResponse) -> list[str]:
    return [
        pb.SubmitOutcome.Name(r.outcome).removeprefix("SUBMIT_OUTCOME_") for r in response.results
    ]


def test_a_batch_answers_each_task_and_is_safe_to_retry_whole(acme):
    keys = [uuid.uuid4().hex for _ in range(4)]
    used = uuid.uuid4().hex
    acme.SubmitTask(_task(used, seconds=0.02), timeout=10)  # the same key, another request
    request = pb.SubmitTasksRequest(
        tasks=[
            _task(keys[0]),
            _task(keys[1], task_type="Bad Type"),
            _task(keys[2]),
            _task(used),  # a different payload under a used key
            _task(keys[0]),  # a key repeated within the request
        ]
    )

    first = acme.SubmitTasks(request, timeout=10)

    assert _outcomes(first) == ["CREATED", "REFUSED", "CREATED", "REFUSED", "REFUSED"]
    assert first.results[1].code == code_pb2.INVALID_ARGUMENT
    assert first.results[1].message.startswith("tasks[1].task_type:")
    assert first.results[3].code == code_pb2.ALREADY_EXISTS
    assert first.results[4].message.startswith("tasks[4].idempotency_key: repeats tasks[0]")

    again = acme.SubmitTasks(request, timeout=10)  # a retry of the whole request

    assert _outcomes(again) == ["REPLAYED", "REFUSED", "REPLAYED", "REFUSED", "REFUSED"]
    assert [again.results[i].task.task_id for i in (0, 2)] == [
        first.results[i].task.task_id for i in (0, 2)
    ]
    for i in (0, 2):
        done = wait_terminal(acme, first.results[i].task.task_id)
        assert (done.state, done.attempts) == (pb.TASK_STATE_SUCCEEDED, 1)
    # The refused invalid task stored nothing: its key is free.
    assert acme.SubmitTask(_task(keys[1]), timeout=10).created


def test_a_full_batch_commits_and_one_more_is_refused_whole(acme):
    full = pb.SubmitTasksRequest(tasks=[_task(uuid.uuid4().hex) for _ in range(MAX_BATCH_TASKS)])
    assert set(_outcomes(acme.SubmitTasks(full, timeout=30))) == {"CREATED"}

    keys = [uuid.uuid4().hex for _ in range(MAX_BATCH_TASKS + 1)]
    too_many = pb.SubmitTasksRequest(tasks=[_task(k) for k in keys])
    with pytest.raises(grpc.RpcError) as err:
        acme.SubmitTasks(too_many, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("tasks: has 34; 1 to 33")
    assert acme.SubmitTask(_task(keys[0]), timeout=10).created  # nothing stored
