"""TaskStore.transition and friends: conditional versioned writes with their events, leases,
the effect ledger. Every "nothing written" claim is checked against a raw scan."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from conveyor.domain import (
    MAX_EVENT_DETAIL_CHARS,
    MAX_HISTORY_EVENTS,
    IllegalTransition,
    TaskState,
)
from conveyor.store import Conflict, now_ms
from conveyor_dev.inject import faults
from store_support import LEASE, claim, ddb_calls, submit

S = TaskState


def test_a_full_lifecycle_appends_consecutive_events_read_back_in_order(store):
    task = submit(store)
    queued = store.transition(task, S.QUEUED, detail="sent by the API")
    running = claim(store, queued, owner="w1/m1/1")
    done = store.transition(
        running,
        S.SUCCEEDED,
        detail="completed",
        set_values={"result": b"\x00result"},
        remove=LEASE,
        lease_owner="w1/m1/1",
    )

    stored = store.get(task.task_id)
    assert stored is not None
    assert stored == dataclasses.replace(done, events=stored.events)
    assert [(e.seq, e.from_state, e.to_state, e.attempt, e.detail) for e in stored.events] == [
        (1, None, S.PENDING, 0, "submitted"),
        (2, S.PENDING, S.QUEUED, 0, "sent by the API"),
        (3, S.QUEUED, S.RUNNING, 1, "claimed"),
        (4, S.RUNNING, S.SUCCEEDED, 1, "completed"),
    ]
    times = [e.at_ms for e in stored.events]
    assert times == sorted(times)
    assert (stored.state, stored.version, stored.event_seq) == (S.SUCCEEDED, 4, 4)
    assert (stored.result, stored.attempts, stored.lease_owner) == (b"\x00result", 1, "")
    assert stored.lease_expires_at_ms == 0


def test_what_transition_returns_equals_a_fresh_read(store):
    """The store computes the new task without reading it back: it must match the item."""
    task = submit(store)
    steps = [
        lambda t: store.transition(t, S.QUEUED),
        lambda t: claim(store, t, owner="w9/m/1"),
        lambda t: store.transition(
            t,
            S.QUEUED,
            detail="retry in 3s: boom",
            set_values={"last_error": "RuntimeError: boom"},
            remove=LEASE,
            lease_owner="w9/m/1",
        ),
        lambda t: claim(store, t, owner="w9/m/2"),
        lambda t: store.transition(
            t, S.FAILED, set_values={"last_error": "bad input"}, remove=LEASE
        ),
    ]
    for step in steps:
        task = step(task)
        fresh = store.get(task.task_id)
        assert fresh == task


def test_a_stale_version_conflicts_and_writes_nothing(store, raw):
    task = submit(store)
    store.transition(task, S.QUEUED)
    items = raw.items()
    with pytest.raises(Conflict):
        store.transition(task, S.CANCELLED, detail="from a stale read")  # task is version 1
    assert raw.items() == items


def test_a_same_state_but_stale_version_conflicts(store, raw):
    task = submit(store)
    queued = store.transition(task, S.QUEUED)
    running = claim(store, queued, owner="a")
    requeued = store.transition(running, S.QUEUED, remove=LEASE, lease_owner="a")
    items = raw.items()
    with pytest.raises(Conflict):
        claim(store, queued, owner="b")  # QUEUED again, but two versions later
    assert raw.items() == items
    assert claim(store, requeued, owner="b").lease_owner == "b"


def test_the_lease_condition_guards_the_owner(store, raw):
    running = claim(store, store.transition(submit(store), S.QUEUED), owner="w1/m1/1")
    items = raw.items()
    with pytest.raises(Conflict):
        store.transition(running, S.SUCCEEDED, remove=LEASE, lease_owner="w2/m1/1")
    assert raw.items() == items
    done = store.transition(running, S.SUCCEEDED, remove=LEASE, lease_owner="w1/m1/1")
    assert done.state == S.SUCCEEDED


def test_via_records_the_intermediate_state_in_one_write(store, raw):
    task = submit(store)
    writes = ddb_calls("UpdateItem"), ddb_calls("TransactWriteItems")
    running = claim(store, task)  # PENDING -> (QUEUED) -> RUNNING
    assert (ddb_calls("UpdateItem"), ddb_calls("TransactWriteItems")) == (
        writes[0] + 1,
        writes[1],
    )
    assert (running.version, running.event_seq) == (2, 3)
    stored = store.get(task.task_id)
    assert stored is not None
    assert [(e.seq, e.from_state, e.to_state) for e in stored.events[1:]] == [
        (2, S.PENDING, S.QUEUED),
        (3, S.QUEUED, S.RUNNING),
    ]
    assert stored.events[1].at_ms == stored.events[2].at_ms
    assert {e.attempt for e in stored.events[1:]} == {1}


@pytest.mark.parametrize(
    ("start", "to", "via"),
    [
        ("pending", S.SUCCEEDED, None),
        ("pending", S.RUNNING, None),  # must go via QUEUED
        ("pending", S.RUNNING, S.SUCCEEDED),  # an illegal intermediate step
        ("succeeded", S.QUEUED, None),
        ("succeeded", S.CANCELLED, None),
    ],
)
def test_an_illegal_transition_is_refused_before_any_write(store, raw, start, to, via):
    task = submit(store)
    if start == "succeeded":
        running = claim(store, task)
        task = store.transition(running, S.SUCCEEDED, remove=LEASE)
    items = raw.items()
    transactions = ddb_calls("TransactWriteItems") + ddb_calls("TransactWriteItems", "error")
    with pytest.raises(IllegalTransition):
        store.transition(task, to, via=via)
    assert ddb_calls("TransactWriteItems") + ddb_calls("TransactWriteItems", "error") == (
        transactions
    )
    assert raw.items() == items


def test_redrive_from_dead_is_the_one_way_out_of_a_terminal_state(store):
    running = claim(store, submit(store))
    dead = store.transition(running, S.DEAD, set_values={"last_error": "x"}, remove=LEASE)
    pending = store.transition(
        dead, S.PENDING, set_values={"attempts": 0, **store.outbox_mark(dead.task_id, now_ms())}
    )
    assert (pending.state, pending.attempts, pending.last_error) == (S.PENDING, 0, "x")
    assert store.get(pending.task_id) == pending
    assert [m.task_id for m in store.outbox_marks(now_ms() + 1, 10)] == [pending.task_id]


@pytest.mark.parametrize("to", [S.QUEUED, S.CANCELLED, S.DEAD, S.RUNNING])
def test_leaving_pending_removes_the_outbox_mark(store, raw, to):
    task = submit(store)
    assert store.outbox_marks(now_ms() + 1, 10) != []
    if to == S.RUNNING:
        moved = claim(store, task)
    else:
        moved = store.transition(task, to, remove=LEASE if to != S.QUEUED else ())
    item = raw.task_item(task.task_id)
    assert item is not None
    assert "outbox_pk" not in item and "outbox_at" not in item
    assert store.outbox_marks(now_ms() + 1, 10) == []
    assert moved.state == to


def test_later_transitions_do_not_bring_the_mark_back(store, raw):
    running = claim(store, store.transition(submit(store), S.QUEUED))
    store.transition(running, S.QUEUED, remove=LEASE)
    item = raw.task_item(running.task_id)
    assert item is not None and "outbox_pk" not in item


def test_history_is_append_only_even_for_a_task_read_from_the_listing(store, raw):
    """The by_tenant index does not project event_seq: a transition from a listed task must
    not overwrite the first event (it did before event Puts became conditional)."""
    task = submit(store)
    [listed] = store.list_for_tenant("acme")
    assert listed.event_seq == 0
    items = raw.items()
    with pytest.raises(Conflict):
        store.transition(listed, S.CANCELLED, detail="from a listed task")
    assert raw.items() == items
    stored = store.get(task.task_id)
    assert stored is not None and [e.detail for e in stored.events] == ["submitted"]


def test_event_detail_is_truncated_in_the_history(store):
    task = store.transition(submit(store), S.QUEUED, detail="x" * 5000)
    stored = store.get(task.task_id)
    assert stored is not None and stored.events[-1].detail == "x" * MAX_EVENT_DETAIL_CHARS


def test_a_transition_whose_response_was_lost_is_recognised_on_its_retry(store):
    """The update lands, its response is lost, and botocore sends it again: the retry fails its
    version condition, and must still report the write as done, not as a Conflict."""
    task = submit(store)
    with faults.armed("dynamodb.UpdateItem=lost count=1") as plan:
        queued = store.transition(task, S.QUEUED, detail="sent")
    assert plan.rules[0].hits == 1
    stored = store.get(task.task_id)
    assert stored is not None
    assert (stored.state, stored.version, [e.detail for e in stored.events]) == (
        S.QUEUED,
        queued.version,
        ["submitted", "sent"],
    )


def test_another_writers_transition_is_a_conflict_even_with_a_lost_response(store):
    task = submit(store)
    store.transition(task, S.QUEUED, detail="the relay's")
    with faults.armed("dynamodb.UpdateItem=lost count=1"), pytest.raises(Conflict):
        store.transition(task, S.QUEUED, detail="the API's")  # same version, another write


def test_a_rival_claim_in_the_same_millisecond_with_the_same_detail_is_a_conflict(
    store, monkeypatch
):
    """Two claims of one snapshot append identical events when the clock and the detail agree;
    the lease owner each set decides whose write it was."""
    task = submit(store)
    monkeypatch.setattr("conveyor.store.now_ms", lambda: 1_800_000_000_000)
    mine = claim(store, task, owner="w1/m1/1")
    with pytest.raises(Conflict):
        claim(store, task, owner="w1/m2/1")
    stored = store.get(task.task_id)
    assert stored is not None and stored.lease_owner == mine.lease_owner == "w1/m1/1"


def test_a_transition_that_meets_a_transaction_is_a_conflict_and_writes_nothing(store, raw):
    task = submit(store)
    items = raw.items()
    with faults.armed("dynamodb.UpdateItem=conflict count=1"), pytest.raises(Conflict):
        store.transition(task, S.QUEUED)
    assert raw.items() == items


def test_the_history_keeps_its_latest_events_and_their_numbers(store):
    task = submit(store)
    running = claim(store, task)  # events 1-3; then one event per RUNNING -> RUNNING
    for n in range(MAX_HISTORY_EVENTS + 5):
        running = store.transition(
            running,
            S.RUNNING,
            detail=f"beat {n}",
            set_values={"attempts": running.attempts},
            lease_owner="w1/m1/1",
        )
    stored = store.get(task.task_id)
    assert stored is not None
    assert len(stored.events) == MAX_HISTORY_EVENTS
    assert stored.event_seq == 3 + MAX_HISTORY_EVENTS + 5
    assert [e.seq for e in stored.events] == list(
        range(stored.event_seq - MAX_HISTORY_EVENTS + 1, stored.event_seq + 1)
    )
    assert stored.events[-1].detail == f"beat {MAX_HISTORY_EVENTS + 4}"
    assert stored == dataclasses.replace(running, events=stored.events)


# ---- leases ----


def test_extend_lease_only_for_the_running_owner(store, raw):
    running = claim(store, submit(store), owner="w1/m/1")
    until = now_ms() + 60_000
    assert store.extend_lease(running.task_id, "w1/m/1", until) is True
    item = raw.task_item(running.task_id)
    assert item is not None and item["lease_expires_at"] == until
    version = item["version"]

    assert store.extend_lease(running.task_id, "w2/m/1", until + 1) is False
    item = raw.task_item(running.task_id)
    assert item is not None and item["lease_expires_at"] == until
    assert item["version"] == version  # a heartbeat is not a state change

    fresh = store.get(running.task_id)
    assert fresh is not None
    store.transition(fresh, S.CANCELLED, remove=LEASE)
    assert store.extend_lease(running.task_id, "w1/m/1", until + 2) is False


def test_extend_lease_of_a_missing_task_is_false_and_creates_nothing(store, raw):
    items = raw.items()
    assert store.extend_lease(uuid.uuid4().hex, "w1", now_ms()) is False
    assert raw.items() == items
