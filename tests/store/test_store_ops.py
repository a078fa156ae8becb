"""Operator actions (conveyor.ops) against real queues and table: DLQ inspect and redrive,
outbox status."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from botocore.exceptions import ClientError
from conveyor import ops as ops_mod
from conveyor.domain import TaskState
from conveyor.store import now_ms
from conveyor_dev.inject import faults
from store_support import claim, dead, submit, succeeded

S = TaskState


def _to_dlq(queue, task, error: str = "boom") -> str:
    """Dead-letter `task` as the worker does: in a message group of its own, so a peek sees
    every dead task at once (in a shared group FIFO would hide all but its head)."""
    return queue.dead_letter(task, error)


def test_inspect_lists_dlq_messages_with_task_state_and_leaves_them_visible(ops, queue, raw):
    task = dead(ops.store, submit(ops.store, task_type="demo.poison"), error="RuntimeError: x")
    message_id = _to_dlq(queue, task, error="from the message")
    orphan_id = uuid.uuid4().hex
    raw.sqs.send_message(
        QueueUrl=raw.res.dlq_url,
        MessageBody=json.dumps({"task_id": orphan_id, "task_type": "t", "error": "lost"}),
        MessageGroupId="t#0",
        MessageDeduplicationId=orphan_id,
    )
    raw.sqs.send_message(
        QueueUrl=raw.res.dlq_url,
        MessageBody="not json",
        MessageGroupId="junk",
        MessageDeduplicationId="junk",
    )

    listing = ops_mod.dlq_inspect(ops, 10)

    entries = listing.entries
    assert listing.held_elsewhere == 0
    by_task = {e.task_id: e for e in entries}
    assert by_task[task.task_id] == ops_mod.DlqEntry(
        task.task_id, "demo.poison", "DEAD", 1, "RuntimeError: x", message_id
    )
    assert by_task[orphan_id].state == "MISSING"
    assert by_task[orphan_id].last_error == "lost"  # the message's error when no task says
    assert by_task["?"].state == "MALFORMED"
    assert len(entries) == 3
    # Inspect is read-only: everything is visible again, the task untouched.
    assert raw.depth(raw.res.dlq_url) == (3, 0)
    assert ops.store.get(task.task_id) == task
    again = ops_mod.dlq_inspect(ops, 10).entries
    assert [e.task_id for e in again] == [e.task_id for e in entries]


def test_inspect_respects_the_limit(ops, queue, raw):
    for _ in range(3):
        _to_dlq(queue, dead(ops.store, submit(ops.store)))
    assert len(ops_mod.dlq_inspect(ops, 2).entries) == 2
    assert raw.depth(raw.res.dlq_url) == (3, 0)


def test_inspect_waits_for_messages_another_reader_holds(ops, queue, raw):
    """The relay's DLQ scan hides every DLQ message while it looks, every sweep: an inspect
    meanwhile must not list a DLQ that looks emptier than it is."""
    tasks = [dead(ops.store, submit(ops.store)) for _ in range(2)]
    for task in tasks:
        _to_dlq(queue, task)
    assert len(raw.receive(raw.res.dlq_url, visibility=2)) == 2  # another reader, for 2 s

    listing = ops_mod.dlq_inspect(ops, 10, held_wait_seconds=15)

    assert sorted(e.task_id for e in listing.entries) == sorted(t.task_id for t in tasks)
    assert listing.held_elsewhere == 0


def _release_after_the_first_pass(monkeypatch, raw, pass_name: str, held: list[dict]) -> None:
    """The other reader's hold ends right after the first look (`pass_name` of ops), before
    anything counts the held messages again: the look missed them, and the count no longer
    shows them held."""
    real = getattr(ops_mod, pass_name)
    passes = 0

    def then_release(*args, **kwargs):
        nonlocal passes
        result = real(*args, **kwargs)
        passes += 1
        if passes == 1:
            for message in held:
                raw.sqs.change_message_visibility(
                    QueueUrl=raw.res.dlq_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=0,
                )
        return result

    monkeypatch.setattr(ops_mod, pass_name, then_release)


def test_inspect_looks_again_when_a_hold_ends_between_its_look_and_its_count(
    ops, queue, raw, monkeypatch
):
    tasks = [dead(ops.store, submit(ops.store)) for _ in range(2)]
    for task in tasks:
        _to_dlq(queue, task)
    held = raw.receive(raw.res.dlq_url, visibility=60)
    assert len(held) == 2
    _release_after_the_first_pass(monkeypatch, raw, "_inspect_pass", held)

    listing = ops_mod.dlq_inspect(ops, 10, held_wait_seconds=15)

    assert sorted(e.task_id for e in listing.entries) == sorted(t.task_id for t in tasks)
    assert listing.held_elsewhere == 0


def test_redrive_looks_again_when_a_hold_ends_between_its_look_and_its_count(
    ops, queue, raw, monkeypatch
):
    task = dead(ops.store, submit(ops.store))
    _to_dlq(queue, task)
    held = raw.receive(raw.res.dlq_url, visibility=60)
    assert len(held) == 1
    _release_after_the_first_pass(monkeypatch, raw, "_redrive_pass", held)

    [result] = ops_mod.dlq_redrive(ops, [task.task_id], limit=10, held_wait_seconds=15)

    assert (result.task_id, result.outcome) == (task.task_id, "redriven")


def test_inspect_says_how_many_messages_stay_held(ops, queue, raw):
    _to_dlq(queue, dead(ops.store, submit(ops.store)))
    raw.receive(raw.res.dlq_url, visibility=60)  # a reader that died holding it
    seen = dead(ops.store, submit(ops.store))
    _to_dlq(queue, seen)

    listing = ops_mod.dlq_inspect(ops, 10, held_wait_seconds=1)

    assert [e.task_id for e in listing.entries] == [seen.task_id]
    assert listing.held_elsewhere == 1
    assert raw.depth(raw.res.dlq_url) == (1, 1)


def test_redrive_requeues_a_dead_task_with_a_new_dedup_id(ops, queue, raw):
    task = dead(ops.store, submit(ops.store, task_type="demo.flaky"))
    assert task.attempts == 1
    _to_dlq(queue, task)
    before = now_ms()

    [result] = ops_mod.dlq_redrive(ops, [task.task_id], limit=10)

    assert (result.task_id, result.outcome) == (task.task_id, "redriven")
    stored = ops.store.get(task.task_id)
    assert stored is not None
    assert (stored.state, stored.attempts) == (S.QUEUED, 0)
    assert stored.updated_at_ms >= before
    redriven, sent = stored.events[-2:]
    assert (redriven.from_state, redriven.to_state, redriven.detail) == (
        S.DEAD,
        S.PENDING,
        "redriven from the DLQ",
    )
    assert (sent.from_state, sent.to_state) == (S.PENDING, S.QUEUED)
    assert ops.store.outbox_marks(2**62, 10) == []  # the mark went with the send

    [message] = raw.receive(raw.res.queue_url)
    assert json.loads(message["Body"]) == {"task_id": task.task_id, "task_type": "demo.flaky"}
    attributes = message["Attributes"]
    assert attributes["MessageDeduplicationId"] == f"{task.task_id}.v{stored.version - 1}"
    assert attributes["MessageDeduplicationId"] != task.task_id
    assert attributes["MessageGroupId"] == queue.group_id(task.task_id, "demo.flaky", task.tenant)
    assert raw.depth(raw.res.dlq_url) == (0, 0)  # deleted from the DLQ


def test_redrive_all_takes_every_dead_task_up_to_the_limit(ops, queue, raw):
    tasks = [dead(ops.store, submit(ops.store)) for _ in range(3)]
    for task in tasks:
        _to_dlq(queue, task)
    results = ops_mod.dlq_redrive(ops, None, limit=2)
    assert [r.outcome for r in results] == ["redriven", "redriven"]
    assert raw.depth(raw.res.dlq_url) == (1, 0)  # the third is still there, visible
    assert raw.depth(raw.res.queue_url) == (2, 0)


def test_redrive_discards_a_message_whose_task_already_succeeded(ops, queue, raw):
    task = succeeded(ops.store, submit(ops.store))
    _to_dlq(queue, task)
    [result] = ops_mod.dlq_redrive(ops, [task.task_id], limit=10)
    assert result.outcome == "discarded"
    assert "SUCCEEDED" in result.detail
    assert raw.depth(raw.res.dlq_url) == (0, 0)
    assert raw.depth(raw.res.queue_url) == (0, 0)
    assert ops.store.get(task.task_id) == task


def test_redrive_skips_a_task_that_is_not_dead_yet_and_leaves_its_message(ops, queue, raw):
    running = claim(ops.store, submit(ops.store))
    _to_dlq(queue, running)
    [result] = ops_mod.dlq_redrive(ops, [running.task_id], limit=10)
    assert result.outcome == "skipped"
    assert raw.depth(raw.res.dlq_url) == (1, 0)
    assert ops.store.get(running.task_id) == running


def test_redrive_of_unknown_ids_is_not_found_and_touches_nothing_else(ops, queue, raw):
    other = dead(ops.store, submit(ops.store))
    _to_dlq(queue, other)
    unknown = uuid.uuid4().hex
    results = ops_mod.dlq_redrive(ops, [unknown], limit=10)
    assert [(r.task_id, r.outcome) for r in results] == [(unknown, "not-found")]
    assert raw.depth(raw.res.dlq_url) == (1, 0)  # the other message is visible again
    assert ops.store.get(other.task_id) == other


def test_redrive_of_a_task_whose_message_another_reader_holds_waits_for_it(ops, queue, raw):
    """The relay's DLQ scan hides every DLQ message while it looks, many times a minute: a
    redrive that runs meanwhile must not report the task's message missing."""
    task = dead(ops.store, submit(ops.store))
    _to_dlq(queue, task)
    assert len(raw.receive(raw.res.dlq_url, visibility=2)) == 1  # another reader, for 2 s

    [result] = ops_mod.dlq_redrive(ops, [task.task_id], limit=10, held_wait_seconds=15)

    assert (result.task_id, result.outcome) == (task.task_id, "redriven")
    stored = ops.store.get(task.task_id)
    assert stored is not None and stored.state == S.QUEUED
    assert raw.depth(raw.res.dlq_url) == (0, 0)


def test_redrive_of_a_task_whose_message_stays_held_says_so_and_changes_nothing(ops, queue, raw):
    task = dead(ops.store, submit(ops.store))
    _to_dlq(queue, task)
    raw.receive(raw.res.dlq_url, visibility=60)  # a reader that died holding it

    [result] = ops_mod.dlq_redrive(ops, [task.task_id], limit=10, held_wait_seconds=1)

    assert (result.task_id, result.outcome) == (task.task_id, "held")
    assert "run again" in result.detail
    assert ops.store.get(task.task_id) == task
    assert raw.depth(raw.res.dlq_url) == (0, 1)


def test_outbox_status_counts_pending_marks(ops):
    empty = ops_mod.outbox_status(ops)
    assert (empty.pending, empty.oldest_age_seconds) == (0, None)

    first = submit(ops.store)
    submit(ops.store)
    third = submit(ops.store)
    ops.store.transition(third, S.QUEUED)

    status = ops_mod.outbox_status(ops)
    assert status.pending == 2
    assert status.oldest_age_seconds is not None
    assert 0 <= status.oldest_age_seconds <= (now_ms() - first.created_at_ms) / 1000


def test_a_redrive_that_fails_half_way_gives_back_the_messages_it_did_not_finish(ops, queue, raw):
    for _ in range(3):
        queue.dead_letter(dead(ops.store, submit(ops.store)), "boom")

    # The first task's two writes go through; every DynamoDB update after them fails.
    with (
        faults.armed("dynamodb.UpdateItem=error skip=2"),
        pytest.raises(ClientError, match="InternalServerError"),
    ):
        ops_mod.dlq_redrive(ops, None, limit=10)

    assert raw.depth(raw.res.dlq_url) == (2, 0)  # visible again now, not after their hold
    assert raw.depth(raw.res.queue_url) == (1, 0)  # the one that was redriven


def test_a_redrive_stops_before_its_hold_on_the_dlq_runs_out(ops, queue, raw):
    tasks = [dead(ops.store, submit(ops.store)) for _ in range(3)]
    for task in tasks:
        queue.dead_letter(task, "boom")

    # Each redrive takes over a second (its send hangs); the messages are held for 3 s.
    with faults.armed("sqs.SendMessage=hang seconds=1.2"):
        results = ops_mod.dlq_redrive(ops, None, limit=10, hold_seconds=3)

    outcomes = sorted(r.outcome for r in results)
    assert outcomes.count("redriven") >= 1
    assert "skipped" in outcomes  # not acted on with a receipt handle about to expire
    skipped = [r for r in results if r.outcome == "skipped"]
    assert all("hold" in r.detail for r in skipped)
    assert raw.depth(raw.res.dlq_url) == (len(skipped), 0)  # given back at once


def _dead_letters(ops, queue) -> dict[str, object]:
    """Three dead letters: two poison tasks with different errors, one of another type."""
    made = {
        "poison-a": dead(
            ops.store, submit(ops.store, task_type="demo.poison"), error="RuntimeError: poison"
        ),
        "poison-b": dead(
            ops.store, submit(ops.store, task_type="demo.poison"), error="TimeoutError: slow"
        ),
        "mail": dead(
            ops.store, submit(ops.store, task_type="email.send"), error="smtp 550 refused"
        ),
    }
    for task in made.values():
        _to_dlq(queue, task)
    return made


def test_inspect_filters_by_type_and_by_a_search_in_the_last_error(ops, queue):
    made = _dead_letters(ops, queue)

    def listed(where: ops_mod.DlqFilter) -> set[str]:
        return {e.task_id for e in ops_mod.dlq_inspect(ops, 10, where=where).entries}

    by_type = ops_mod.DlqFilter(task_type="demo.poison")
    assert listed(by_type) == {made["poison-a"].task_id, made["poison-b"].task_id}
    by_error = ops_mod.DlqFilter(error=re.compile("poison|550"))
    assert listed(by_error) == {made["poison-a"].task_id, made["mail"].task_id}
    both = ops_mod.DlqFilter("demo.poison", re.compile("slow"))
    assert listed(both) == {made["poison-b"].task_id}
    # The limit counts matches, not messages read: the one match is found whatever its place.
    assert len(ops_mod.dlq_inspect(ops, 1, where=both).entries) == 1


def test_redrive_by_type_and_error_takes_only_the_matching_tasks(ops, queue, raw):
    made = _dead_letters(ops, queue)
    where = ops_mod.DlqFilter("demo.poison", re.compile("RuntimeError"))

    results = ops_mod.dlq_redrive(ops, None, limit=10, where=where)

    assert [(r.task_id, r.outcome) for r in results] == [(made["poison-a"].task_id, "redriven")]
    assert raw.depth(raw.res.dlq_url) == (2, 0)  # the other two stay, visible
    named = ops_mod.dlq_redrive(ops, [made["mail"].task_id], limit=10, where=where)
    assert [r.outcome for r in named] == ["skipped"]
    assert ops.store.get(made["mail"].task_id).state == S.DEAD
