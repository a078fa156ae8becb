"""Delayed tasks (not_before) and deadlines (start_by) against the store tier's fresh table and
queues: a delayed task is committed with a due mark and no message, the relay sends it once due
(and not before), and a task never started by its start_by ends EXPIRED, never claimed.

Time passing is simulated by moving a mark's date back (the relay reads the clock; the test
does not wait for it)."""

from __future__ import annotations

import json
import uuid

import pytest
import tenacity
from conveyor.domain import TaskState
from conveyor.queue import parse
from conveyor.relay import Relay
from conveyor.store import TaskStore, now_ms
from conveyor.tasks.lifecycle import Lifecycle
from store_support import TENANT, metric, relay_on

S = TaskState
HOUR_MS = 3_600_000


@pytest.fixture
def relay(settings, store, queue) -> Relay:
    return relay_on(settings, store, queue, outbox_age_seconds=10)


def _submit(lifecycle: Lifecycle, **timing: int):
    return lifecycle.submit(
        tenant=TENANT,
        task_type="demo.sleep",
        payload=b"{}",
        idempotency_key=uuid.uuid4().hex,
        request_hash="h",
        max_attempts=3,
        remaining=None,
        send_budget=lambda: 1.0,
        **timing,
    ).task


def _move_mark(raw, task_id: str, to_ms: int) -> None:
    raw.update(f"TASK#{task_id}", "TASK", "SET outbox_at = :at", {":at": {"N": str(to_ms)}})


def _sent(raw) -> list[str]:
    return [json.loads(m["Body"])["task_id"] for m in raw.receive(raw.res.queue_url)]


def test_a_delayed_task_is_committed_pending_and_sent_by_the_relay_once_due(
    relay, store, queue, raw
):
    lifecycle = Lifecycle(store, queue)
    due = now_ms() + 24 * HOUR_MS
    task = _submit(lifecycle, not_before_ms=due)

    assert (task.state, task.not_before_ms) == (S.PENDING, due)
    assert raw.task_item(task.task_id)["outbox_pk"].startswith("DUE#")
    assert raw.depth(raw.res.queue_url) == (0, 0)  # no message before it is due
    assert store.outbox_marks(2**62, 10) == []  # not an outbox mark the stale sweep could send

    assert relay.relay_due_marks() == 0
    assert relay._next_due_ms == due  # the relay wakes when it comes due
    assert raw.depth(raw.res.queue_url) == (0, 0)

    _move_mark(raw, task.task_id, now_ms() - 1)  # its time has come
    lagged = metric("conveyor_delayed_task_lag_seconds_count")
    assert relay.relay_due_marks() == 1
    assert metric("conveyor_delayed_task_lag_seconds_count") == lagged + 1
    assert _sent(raw) == [task.task_id]
    queued = store.get(task.task_id)
    assert queued is not None and queued.state == S.QUEUED
    assert "outbox_pk" not in raw.task_item(task.task_id)
    assert relay.relay_due_marks() == 0  # sent once: the mark went with QUEUED


def test_the_relay_looks_again_at_once_while_more_are_due_than_one_query_returns(
    settings, store, queue, raw
):
    relay = relay_on(settings, store, queue, relay_batch_size=2)
    lifecycle = Lifecycle(store, queue)
    tasks = [_submit(lifecycle, not_before_ms=now_ms() + HOUR_MS) for _ in range(3)]
    for task in tasks:
        _move_mark(raw, task.task_id, now_ms() - 1)
    assert relay.relay_due_marks() == 2
    assert relay._next_due_ms == 0
    assert relay.relay_due_marks() == 1
    assert relay._next_due_ms is None


def test_a_task_past_its_start_by_expires_at_the_relay_and_is_never_sent(relay, store, queue, raw):
    lifecycle = Lifecycle(store, queue)
    task = _submit(lifecycle, not_before_ms=now_ms() + HOUR_MS, start_by_ms=now_ms() + 2 * HOUR_MS)
    _move_mark(raw, task.task_id, now_ms() - 1)
    raw.update(
        f"TASK#{task.task_id}", "TASK", "SET start_by = :at", {":at": {"N": str(now_ms() - 1)}}
    )
    expired = metric("conveyor_tasks_completed_total", task_type="demo.sleep", outcome="expired")

    assert relay.relay_due_marks() == 0

    stored = store.get(task.task_id)
    assert stored is not None and stored.state == S.EXPIRED
    assert stored.events[-1].detail == "not started by its start_by"
    assert raw.depth(raw.res.queue_url) == (0, 0)
    assert "outbox_pk" not in raw.task_item(task.task_id)
    assert (
        metric("conveyor_tasks_completed_total", task_type="demo.sleep", outcome="expired")
        == expired + 1
    )


def test_a_worker_expires_a_queued_task_past_its_start_by_instead_of_claiming_it(
    store: TaskStore, queue, raw
):
    lifecycle = Lifecycle(store, queue)
    # Sent at once, and its start_by passes while it waits on the queue (the API refuses a
    # start_by already past; the lifecycle takes it, which stands in for the wait).
    task = _submit(lifecycle, start_by_ms=now_ms() - 1)
    [message] = [parse(m) for m in queue.receive(10, 0, 30)]

    run = lifecycle.receive(
        message, "w1", 30_000, tenacity.Retrying(stop=tenacity.stop_after_attempt(1))
    )

    assert run is None
    stored = store.get(task.task_id)
    assert stored is not None
    assert (stored.state, stored.attempts) == (S.EXPIRED, 0)
    assert raw.depth(raw.res.queue_url) == (0, 0)  # its message is finished with


def test_a_started_task_does_not_expire(store: TaskStore, queue, raw):
    lifecycle = Lifecycle(store, queue)
    task = _submit(lifecycle, start_by_ms=now_ms() + HOUR_MS)
    [message] = [parse(m) for m in queue.receive(10, 0, 30)]
    run = lifecycle.receive(message, "w1", 30_000, tenacity.Retrying())
    assert run is not None
    assert not run.task.expired_at(task.start_by_ms + 1)  # attempts 1: it started in time
