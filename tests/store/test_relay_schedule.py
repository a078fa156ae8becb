"""When the relay queries the outbox (issue 9): only once a mark can be stale. Requests are
counted by AWS operation, stale marks by the messages that reach the queue."""

from __future__ import annotations

import json
import time

from conveyor import relay
from conveyor.domain import TaskState
from conveyor.queue import dlq as dlq_of
from conveyor_dev.inject import faults
from store_support import claim, ddb_calls, metric, relay_on, submit

SHARDS = 4  # CONVEYOR_OUTBOX_SHARDS' default: one Query per shard


def sqs_calls(operation: str) -> float:
    return metric(
        "conveyor_aws_requests_total", service="sqs", operation=operation, outcome="success"
    )


def _queries_of(sweep) -> float:
    """Queries of a sweep beside the due marks' query and the due schedules' query, which every
    sweep makes (one Query per shard, and one: a delayed task submitted or a schedule created
    since the last sweep may come due before the next)."""
    before = ddb_calls("Query")
    sweep()
    return ddb_calls("Query") - before - SHARDS - 1


def test_the_outbox_is_queried_again_only_when_a_mark_it_saw_turns_stale(
    settings, store, queue, raw, monkeypatch
):
    sweeper = relay_on(settings, store, queue, outbox_age_seconds=10)
    task = submit(store)  # its mark is fresh: stale in 10 s

    assert _queries_of(sweeper.sweep) == SHARDS
    assert _queries_of(sweeper.sweep) == 0  # nothing can be stale yet
    assert raw.receive(raw.res.queue_url) == []

    # Ten seconds later by the relay's clock the mark is stale: queried and relayed.
    real_now = relay.now_ms
    monkeypatch.setattr(relay, "now_ms", lambda: real_now() + 10_001)
    assert _queries_of(sweeper.sweep) == SHARDS + 1  # and the stale task's read, a Query too
    assert [json.loads(m["Body"])["task_id"] for m in raw.receive(raw.res.queue_url)] == [
        task.task_id
    ]
    assert store.get(task.task_id).state == TaskState.QUEUED


def test_an_empty_outbox_is_queried_once_per_outbox_age(settings, store, queue, monkeypatch):
    sweeper = relay_on(settings, store, queue, outbox_age_seconds=10)
    real_now = relay.now_ms
    before_query = real_now()
    assert _queries_of(sweeper.sweep) == SHARDS
    monkeypatch.setattr(relay, "now_ms", lambda: before_query + 9_000)
    assert _queries_of(sweeper.sweep) == 0
    # A mark set right after that query is stale an outbox age after it, not before.
    monkeypatch.setattr(relay, "now_ms", lambda: real_now() + 10_000)
    assert _queries_of(sweeper.sweep) == SHARDS


def test_a_failed_query_is_tried_again_at_the_next_sweep(settings, store, queue):
    sweeper = relay_on(settings, store, queue, outbox_age_seconds=10)
    with faults.armed("dynamodb.Query=error"):
        sweeper.sweep()  # (the due marks' query fails too, and is made again every sweep)
    assert _queries_of(sweeper.sweep) == SHARDS  # the failed one did not count as done
    assert _queries_of(sweeper.sweep) == 0


def test_a_full_batch_is_queried_again_at_the_next_sweep(settings, store, queue):
    sweeper = relay_on(settings, store, queue, outbox_age_seconds=10, relay_batch_size=1)
    submit(store)
    submit(store)
    assert _queries_of(sweeper.sweep) == SHARDS
    assert _queries_of(sweeper.sweep) == SHARDS  # a batch of one, two marks: more behind it


def test_a_dlq_holding_messages_is_scanned_every_sweep(settings, store, queue):
    sweeper = relay_on(settings, store, queue, outbox_age_seconds=10)
    stuck = claim(store, submit(store))
    # The redrive policy moved it:
    queue.send(stuck.task_id, stuck.task_type, tenant=stuck.tenant, queue=dlq_of())
    sweeper.sweep()  # depth 1: compensated, re-filed under the task's own group
    assert store.get(stuck.task_id).state == TaskState.DEAD
    before = sqs_calls("ReceiveMessage")
    time.sleep(0.1)  # a DLQ of one is due again a tenth of a second later: at every sweep
    sweeper.sweep()
    assert sqs_calls("ReceiveMessage") > before  # the dead letter waits there: scanned again
