"""Delayed tasks (not_before) and deadlines (start_by) against the store tier's fresh table and
queues: a delayed task is committed with a due mark and no message, the relay sends it once due
(and not before), and a task never started by its start_by ends EXPIRED, never claimed.

Time passing is simulated by moving a mark's date back (the relay reads the clock; the test
does not wait for it)."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
import tenacity
from conveyor.aws import make_breaker
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
    settings, clients, queue, raw
):
    # One outbox shard: a query's page is then the shard's, `relay_batch_size` marks.
    one_shard = settings.model_copy(update={"outbox_shards": 1})
    store = TaskStore(clients, one_shard, make_breaker(one_shard, "dynamodb"))
    relay = relay_on(settings, store, queue, relay_batch_size=2)
    lifecycle = Lifecycle(store, queue)
    tasks = [_submit(lifecycle, not_before_ms=now_ms() + HOUR_MS) for _ in range(3)]
    for task in tasks:
        _move_mark(raw, task.task_id, now_ms() - 1)
    assert relay.relay_due_marks() == 2
    assert relay._next_due_ms == 0
    assert relay.relay_due_marks() == 1
    assert relay._next_due_ms is None


def _due_now(lifecycle: Lifecycle, raw, count: int) -> list[str]:
    """`count` delayed tasks, their marks moved to just past (due now, in submit order)."""
    tasks = [_submit(lifecycle, not_before_ms=now_ms() + HOUR_MS) for _ in range(count)]
    for task in tasks:
        _move_mark(raw, task.task_id, now_ms() - 1)
    return [t.task_id for t in tasks]


def test_a_due_task_is_sent_on_its_submits_trace(relay, store, raw):
    """The relay's batched read takes each task's trace context from its PAYLOAD item, and
    its batched send carries it, so the task's run continues the submit's trace."""
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    task = store.submit(
        tenant=TENANT,
        task_type="demo.sleep",
        payload=b"{}",
        idempotency_key=uuid.uuid4().hex,
        request_hash="h",
        max_attempts=3,
        traceparent=traceparent,
        not_before_ms=now_ms() + HOUR_MS,
    ).task
    _move_mark(raw, task.task_id, now_ms() - 1)

    assert relay.relay_due_marks() == 1
    [message] = raw.receive(raw.res.queue_url)
    assert message["MessageAttributes"]["traceparent"]["StringValue"] == traceparent
    assert json.loads(message["Body"]) == {"task_id": task.task_id, "task_type": "demo.sleep"}


def test_a_sweep_sends_every_due_mark_its_shard_queries_read(settings, store, queue, raw):
    """The due query reads up to `relay_batch_size` marks from each outbox shard; all the due
    ones go in that sweep (the reads are paid for), not only the earliest `relay_batch_size`."""
    relay = relay_on(settings, store, queue, relay_batch_size=1)
    ids = _due_now(Lifecycle(store, queue), raw, 12)
    shards = {store.outbox_shard(t) for t in ids}  # one page of one mark each

    assert relay.relay_due_marks() == len(shards)
    assert relay._next_due_ms == 0  # a full page: more may be due behind


@pytest.mark.parametrize("failure", ["refused", "raised"])
def test_a_due_task_whose_send_fails_keeps_its_mark_and_holds_back_none_of_the_others(
    failure, settings, store, queue, raw, monkeypatch
):
    """SQS refuses one entry of a SendMessageBatch ("refused"), or the whole request of the
    batch of ten holding it fails ("raised"): every other due task is sent and QUEUED in the
    same sweep, and the failed ones keep their due marks for the next sweep, which sends them."""
    relay = relay_on(settings, store, queue)
    ids = _due_now(Lifecycle(store, queue), raw, 13)  # two batches of ten: 10 and 3
    victim = ids[-1]
    sqs = queue._sqs()
    real = sqs.send_message_batch
    failed: list[str] = []

    def failing(**kwargs):
        entries = kwargs["Entries"]
        hit = [e for e in entries if json.loads(e["MessageBody"])["task_id"] == victim]
        if not hit:
            return real(**kwargs)
        if failure == "raised":
            failed.extend(json.loads(e["MessageBody"])["task_id"] for e in entries)
            raise ConnectionError("SQS is unreachable")
        failed.append(victim)
        resp = real(**{**kwargs, "Entries": [e for e in entries if e not in hit]})
        refusal = {"Id": hit[0]["Id"], "SenderFault": False, "Code": "InternalError"}
        return {**resp, "Failed": [refusal]}

    monkeypatch.setattr(sqs, "send_message_batch", failing)
    assert relay.relay_due_marks() == len(ids) - len(failed)
    assert victim in failed and len(failed) < len(ids)
    for task_id in ids:
        stored = store.get(task_id)
        assert stored is not None
        assert stored.state == (S.PENDING if task_id in failed else S.QUEUED), task_id
        assert ("outbox_pk" in raw.task_item(task_id)) == (task_id in failed)
    assert raw.depth(raw.res.queue_url) == (len(ids) - len(failed), 0)

    monkeypatch.setattr(sqs, "send_message_batch", real)
    assert relay.relay_due_marks() == len(failed)  # the next sweep sends what failed
    assert {getattr(store.get(t), "state", None) for t in ids} == {S.QUEUED}
    assert raw.depth(raw.res.queue_url) == (len(ids), 0)  # one message each


def test_the_relay_enqueues_due_tasks_side_by_side_no_more_than_its_setting_allows(
    settings, store, queue, raw, monkeypatch
):
    """CONVEYOR_RELAY_DUE_CONCURRENCY bounds the batches of ten in flight at once: with 2, two
    sends overlap (each waits for another to start before it answers) and never three."""
    relay = relay_on(settings, store, queue, relay_due_concurrency=2)
    ids = _due_now(Lifecycle(store, queue), raw, 40)  # four batches of ten
    sqs = queue._sqs()
    real = sqs.send_message_batch
    lock = threading.Lock()
    in_flight, most = 0, 0
    overlapped = threading.Event()

    def counting(**kwargs):
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
            if in_flight >= 2:
                overlapped.set()
        try:
            # A deadlock guard, not a timing bound: one at a time, it never overlaps.
            overlapped.wait(timeout=10)
            return real(**kwargs)
        finally:
            with lock:
                in_flight -= 1

    monkeypatch.setattr(sqs, "send_message_batch", counting)
    assert relay.relay_due_marks() == len(ids)
    assert most == 2


def test_the_relay_sends_the_first_due_tasks_while_it_reads_the_next_hundred(
    settings, store, queue, raw, monkeypatch
):
    """The due tasks' reads (a hundred at a time) overlap their sends: the first batch of ten
    goes out before the second hundred is read (the second read waits for a send to start, and
    fails the test if none comes: read all, then send, never overlaps)."""
    relay = relay_on(settings, store, queue, relay_batch_size=200, relay_due_concurrency=2)
    ids = _due_now(Lifecycle(store, queue), raw, 110)  # two reads: 100 and 10
    sqs = queue._sqs()
    real_send, real_read = sqs.send_message_batch, store.get_many
    sending = threading.Event()
    reads: list[bool] = []  # per read after the first: had a send started by then?

    def send(**kwargs):
        sending.set()
        return real_send(**kwargs)

    def read(task_ids, **kwargs):
        # A deadlock guard, not a timing bound: read-all-then-send never sets it.
        reads.append(sending.wait(timeout=10) if reads else True)
        return real_read(task_ids, **kwargs)

    monkeypatch.setattr(sqs, "send_message_batch", send)
    monkeypatch.setattr(store, "get_many", read)
    assert relay.relay_due_marks() == len(ids)
    assert len(reads) == 2 and all(reads)


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
