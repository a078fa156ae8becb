"""Delayed tasks and deadlines through the API, with the real relay and workers: a delayed task
is committed PENDING with its due time, replays like any submit, and runs only once due; bad
times are refused naming the field and store nothing."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
from conveyor.store import VIA_DETAIL
from conveyor.v1 import task_service_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp
from support import get, path_of, wait_terminal

pytestmark = pytest.mark.integration
DAY_MS = 86_400_000


def _at(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _request(key: str, **timing: int) -> pb.SubmitTaskRequest:
    return pb.SubmitTaskRequest(
        task_type="demo.sleep",
        payload=b'{"seconds": 0.01}',
        idempotency_key=key,
        **{name: _at(ms) for name, ms in timing.items()},
    )


def test_a_delayed_task_waits_pending_until_due_then_runs_once(acme):
    key = uuid.uuid4().hex
    due = _now_ms() + 1500
    first = acme.SubmitTask(_request(key, not_before=due), timeout=10)
    again = acme.SubmitTask(_request(key, not_before=due), timeout=10)

    assert first.created and not again.created
    assert again.task.task_id == first.task.task_id
    assert first.task.state == pb.TASK_STATE_PENDING
    assert first.task.not_before.ToMilliseconds() == due

    done = wait_terminal(acme, first.task.task_id)

    assert (done.state, done.attempts) == (pb.TASK_STATE_SUCCEEDED, 1)
    history = get(acme, done.task_id)
    assert path_of(history) == ["PENDING", "QUEUED", "RUNNING", "SUCCEEDED"]
    queued = history.events[1]
    assert queued.at.ToMilliseconds() >= due  # not on the queue before its time
    # Recorded by the relay after its send, or by the claim when the worker was quicker.
    assert queued.detail in ("sent by the relay: due", VIA_DETAIL)


def test_a_start_by_is_kept_on_the_task(acme):
    start_by = _now_ms() + DAY_MS
    response = acme.SubmitTask(_request(uuid.uuid4().hex, start_by=start_by), timeout=10)
    assert response.task.start_by.ToMilliseconds() == start_by
    assert wait_terminal(acme, response.task.task_id).state == pb.TASK_STATE_SUCCEEDED


@pytest.mark.parametrize(
    ("timing", "field"),
    [
        ({"not_before": 367 * DAY_MS}, "not_before"),
        ({"start_by": -1000}, "start_by"),
        ({"not_before": 2 * DAY_MS, "start_by": DAY_MS}, "start_by"),
        ({"start_by": 367 * DAY_MS}, "start_by"),
    ],
)
def test_bad_times_are_refused_naming_the_field_and_store_nothing(acme, timing, field):
    key = uuid.uuid4().hex
    now = _now_ms()
    request = _request(key, **{name: now + offset for name, offset in timing.items()})

    with pytest.raises(grpc.RpcError) as err:
        acme.SubmitTask(request, timeout=10)

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}:")
    # Nothing stored: the same key is free for a good request.
    assert acme.SubmitTask(_request(key), timeout=10).created


def test_a_delay_of_a_year_is_accepted(acme):
    due = _now_ms() + 365 * DAY_MS
    response = acme.SubmitTask(_request(uuid.uuid4().hex, not_before=due), timeout=10)
    assert response.created and response.task.state == pb.TASK_STATE_PENDING
    assert acme.CancelTask(
        pb.CancelTaskRequest(task_id=response.task.task_id), timeout=10
    ).task.state == (pb.TASK_STATE_CANCELLED)


def test_a_retry_after_the_start_by_passed_replays_the_task_it_made(acme):
    """A client whose answer was lost retries the same request with the same key: it must learn
    of the task it made, even once that task's start_by has passed, not be told its request
    is invalid (it would think nothing was submitted)."""
    key = uuid.uuid4().hex
    start_by = _now_ms() + 1000
    first = acme.SubmitTask(_request(key, start_by=start_by), timeout=10)
    while _now_ms() <= start_by + 50:
        time.sleep(0.05)

    again = acme.SubmitTask(_request(key, start_by=start_by), timeout=10)

    assert not again.created
    assert again.task.task_id == first.task.task_id


def test_a_batch_retried_after_a_start_by_passed_replays_its_task(acme):
    key, bad = uuid.uuid4().hex, uuid.uuid4().hex
    start_by = _now_ms() + 1000
    batch = pb.SubmitTasksRequest(tasks=[_request(key, start_by=start_by)])
    first = acme.SubmitTasks(batch, timeout=10)
    while _now_ms() <= start_by + 50:
        time.sleep(0.05)

    # The same task again, and a new one with that (now past) start_by: only the new one is bad.
    batch.tasks.append(_request(bad, start_by=start_by))
    again = acme.SubmitTasks(batch, timeout=10)

    replayed, refused = again.results
    assert replayed.outcome == pb.SUBMIT_OUTCOME_REPLAYED
    assert replayed.task.task_id == first.results[0].task.task_id
    assert refused.outcome == pb.SUBMIT_OUTCOME_REFUSED
    assert "start_by" in refused.message
