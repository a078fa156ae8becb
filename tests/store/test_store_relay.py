"""The outbox relay and the DLQ compensator (conveyor.relay.Relay), one sweep at a time against
the store tier's fresh table and queues."""

from __future__ import annotations

import json

import pytest
from conveyor.domain import TaskState
from conveyor.queue import dlq as dlq_of
from conveyor.relay import Relay
from conveyor.settings import RelaySettings
from conveyor.telemetry import metrics
from conveyor_dev.inject import faults
from store_support import claim, metric, relay_on, submit

S = TaskState


@pytest.fixture
def relay(aws_backend, settings, store, queue) -> Relay:
    relay_settings = RelaySettings(  # type: ignore[call-arg]
        **aws_backend.env(),
        table_name=settings.table_name,
        **settings.lane_url_settings(),
        metrics_listen="127.0.0.1:0",
        outbox_age_seconds=10,
    )
    return Relay(relay_settings, store, queue)


def _age_mark(raw, task_id: str, seconds: float) -> None:
    item = raw.task_item(task_id)
    raw.update(
        f"TASK#{task_id}",
        "TASK",
        "SET outbox_at = :at",
        {":at": {"N": str(int(item["outbox_at"]) - int(seconds * 1000))}},
    )


def test_relay_sends_only_stale_marks_and_queues_their_tasks(relay, store, raw):
    stale, fresh = submit(store, task_type="demo.a"), submit(store, task_type="demo.b")
    _age_mark(raw, stale.task_id, 60)
    relayed_before = metric("conveyor_outbox_relayed_total")

    assert relay.relay_stale_marks() == 1

    assert metric("conveyor_outbox_relayed_total") == relayed_before + 1
    assert metric("conveyor_outbox_pending_tasks") == 2  # counted before this sweep's sends
    assert [json.loads(m["Body"])["task_id"] for m in raw.receive(raw.res.queue_url)] == [
        stale.task_id
    ]
    sent = store.get(stale.task_id)
    assert sent is not None and sent.state == S.QUEUED
    assert sent.events[-1].detail == "sent by the outbox relay"
    assert store.get(fresh.task_id).state == S.PENDING  # not old enough yet
    assert [m.task_id for m in store.outbox_marks(2**62, 10)] == [fresh.task_id]


def test_relay_skips_marks_of_tasks_a_worker_already_claimed(relay, store, raw):
    task = submit(store)
    _age_mark(raw, task.task_id, 60)
    stale_copy = store.get(task.task_id)
    claim(store, task)  # the worker got the API's message; the mark went with the claim
    assert stale_copy is not None and stale_copy.state == S.PENDING
    assert relay.relay_stale_marks() == 0
    assert raw.depth(raw.res.queue_url) == (0, 0)


def test_compensator_marks_a_task_moved_to_the_dlq_by_the_redrive_policy_dead(
    relay, store, queue, raw
):
    stuck = claim(store, submit(store))  # a worker died on it too often
    queue.send(stuck.task_id, stuck.task_type, tenant=stuck.tenant, queue=dlq_of())
    assert relay.compensate_dlq() == 1
    stored = store.get(stuck.task_id)
    assert stored is not None
    assert (stored.state, stored.lease_owner) == (S.DEAD, "")
    assert stored.last_error == "redrive policy: too many receives"
    assert raw.depth(raw.res.dlq_url) == (1, 0)  # left for the operator to inspect/redrive
    assert relay.compensate_dlq() == 0  # terminal now: nothing more to do


def test_compensator_finds_a_stuck_task_behind_dead_ones_in_the_same_group(
    relay, store, queue, raw
):
    # The redrive policy moves messages with their original group: twelve messages of dead
    # tasks ahead of one of a task that is stuck, all in one FIFO group of the DLQ.
    group = "demo.poison#0"
    dead = []
    for _ in range(12):
        task = claim(store, submit(store, task_type="demo.poison"))
        dead.append(store.transition(task, S.DEAD, remove=("lease_owner", "lease_expires_at")))
        queue.send(task.task_id, task.task_type, queue=dlq_of(), group_id=group)
    stuck = claim(store, submit(store, task_type="demo.poison"))
    queue.send(stuck.task_id, stuck.task_type, queue=dlq_of(), group_id=group)

    for _ in range(3):  # a few sweeps: each re-files the heads it sees under their own groups
        relay.compensate_dlq()

    final = store.get(stuck.task_id)
    assert final is not None and final.state == S.DEAD
    assert raw.depth(raw.res.dlq_url)[0] == 13  # re-filed, none lost


def test_relay_finishes_a_redrive_that_died_before_its_send(relay, store, raw):
    from conveyor.store import now_ms

    dead = claim(store, submit(store, task_type="demo.flaky"))
    dead = store.transition(dead, S.DEAD, remove=("lease_owner", "lease_expires_at"))
    # The operator's redrive wrote PENDING with its outbox mark, then died before sending.
    long_ago = now_ms() - 60_000
    pending = store.transition(
        dead,
        S.PENDING,
        detail="redriven from the DLQ",
        set_values={"attempts": 0, **store.outbox_mark(dead.task_id, long_ago)},
    )

    assert relay.relay_stale_marks() == 1

    [message] = raw.receive(raw.res.queue_url)
    assert message["Attributes"]["MessageDeduplicationId"] == f"{dead.task_id}.v{pending.version}"
    final = store.get(dead.task_id)
    assert final is not None and (final.state, final.attempts) == (S.QUEUED, 0)


def test_compensator_still_sees_new_arrivals_behind_a_full_batch_of_dead_letters(
    settings, store, queue, raw
):
    relay = relay_on(settings, store, queue, relay_batch_size=3)
    for _ in range(3):  # as many dead letters as one batch, waiting for an operator
        task = claim(store, submit(store, task_type="demo.poison"))
        dead = store.transition(task, S.DEAD, remove=("lease_owner", "lease_expires_at"))
        queue.dead_letter(dead, "boom")
    assert relay.compensate_dlq() == 0
    stuck = claim(store, submit(store))  # then the redrive policy moves one more message
    queue.send(stuck.task_id, stuck.task_type, tenant=stuck.tenant, queue=dlq_of())

    assert relay.compensate_dlq() == 1

    assert store.get(stuck.task_id).state == S.DEAD
    assert raw.depth(raw.res.dlq_url) == (4, 0)  # every dead letter visible to operators again


def test_a_failing_sweep_part_does_not_skip_the_others(settings, store, queue, raw):
    relay = relay_on(settings, store, queue)
    stuck = claim(store, submit(store))
    queue.send(stuck.task_id, stuck.task_type, tenant=stuck.tenant, queue=dlq_of())
    metrics.queue_messages.labels("dlq", "default", "visible").set(-1)  # not exported yet

    # The sweep's first part, the outbox-mark query, fails (each of its tries); the reads after
    # it (Queries too) go through.
    with faults.armed(f"dynamodb.Query=error count={settings.aws_max_attempts}"):
        relay.sweep()

    assert store.get(stuck.task_id).state == S.DEAD  # the DLQ compensation still ran
    assert metric("conveyor_queue_messages", queue="dlq", state="visible") >= 0  # gauges too
