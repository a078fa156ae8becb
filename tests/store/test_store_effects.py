"""The handler effect ledger (TaskStore.record_effect, behind TaskContext.apply_once): one record
per (task, effect name), fenced by the lease, right when its response is lost, and ordered
against CancelTask on the task item."""

from __future__ import annotations

import pytest
from conveyor.domain import TaskState
from conveyor.store import Conflict, EffectsApplied, LeaseLost
from conveyor_dev.inject import faults
from store_support import claim, submit

S = TaskState


def _ledger(raw, task_id: str) -> dict[str, dict]:
    return {i["sk"]: i for i in raw.items() if i["pk"] == f"EFFECT#{task_id}"}


def test_each_effect_name_is_recorded_once_per_task(store, raw):
    running = claim(store, submit(store), owner="w1/m/1")

    assert store.record_effect(running.task_id, "charge", "w1/m/1") is True
    assert store.record_effect(running.task_id, "email", "w1/m/1") is True  # another effect

    # A later attempt (the first worker died; another took over) finds both recorded.
    later = store.transition(
        running, S.RUNNING, set_values={"attempts": 2, "lease_owner": "w2/m/2"}
    )
    assert store.record_effect(later.task_id, "charge", "w2/m/2") is False
    assert store.record_effect(later.task_id, "email", "w2/m/2") is False
    ledger = _ledger(raw, running.task_id)
    assert set(ledger) == {"charge", "email"}
    assert {i["owner"] for i in ledger.values()} == {"w1/m/1"}
    assert store.get(running.task_id).effects_applied == 2


@pytest.mark.parametrize("fenced_off", ["another owner", "cancelled", "not claimed"])
def test_the_ledger_write_is_fenced_by_the_lease(store, raw, fenced_off):
    task = submit(store)
    if fenced_off != "not claimed":
        task = claim(store, task, owner="w1/m/1")
    if fenced_off == "cancelled":
        store.cancel(task, "cancelled by the client")
    owner = "w2/m/1" if fenced_off == "another owner" else "w1/m/1"

    with pytest.raises(LeaseLost):
        store.record_effect(task.task_id, "charge", owner)

    assert _ledger(raw, task.task_id) == {}
    assert store.get(task.task_id).effects_applied == 0


def test_a_lost_response_is_still_this_attempts_effect(store, raw):
    running = claim(store, submit(store), owner="w1/m/1")

    # The first try lands and its answer is thrown away; botocore sends it again.
    with faults.armed("dynamodb.TransactWriteItems=lost count=1") as plan:
        applied = store.record_effect(running.task_id, "charge", "w1/m/1")

    assert [r.hits for r in plan.rules] == [1]
    assert applied is True  # botocore's retry is the same write, not an earlier attempt's
    assert list(_ledger(raw, running.task_id)) == ["charge"]
    assert store.get(running.task_id).effects_applied == 1


def test_a_second_call_by_the_same_attempt_is_still_its_own(store, raw):
    running = claim(store, submit(store), owner="w1/m/1")
    assert store.record_effect(running.task_id, "charge", "w1/m/1") is True
    assert store.record_effect(running.task_id, "charge", "w1/m/1") is True
    assert store.get(running.task_id).effects_applied == 1


def test_cancel_is_refused_once_an_effect_is_recorded(store, raw):
    running = claim(store, submit(store), owner="w1/m/1")
    store.record_effect(running.task_id, "charge", "w1/m/1")

    # `running` was read before the effect: the version did not change, the condition sees it.
    with pytest.raises(EffectsApplied):
        store.cancel(store.get(running.task_id), "too late")
    with pytest.raises(Conflict):
        store.cancel(running, "raced the effect")
    assert store.get(running.task_id).state == S.RUNNING


def test_an_effect_after_cancel_is_refused(store, raw):
    running = claim(store, submit(store), owner="w1/m/1")
    store.cancel(running, "cancelled by the client")
    with pytest.raises(LeaseLost):
        store.record_effect(running.task_id, "charge", "w1/m/1")
    final = store.get(running.task_id)
    assert (final.state, final.lease_owner, final.effects_applied) == (S.CANCELLED, "", 0)


def test_an_effect_name_is_validated(store):
    running = claim(store, submit(store), owner="w1/m/1")
    with pytest.raises(ValueError, match="effect name"):
        store.record_effect(running.task_id, "", "w1/m/1")
    with pytest.raises(ValueError, match="effect name"):
        store.record_effect(running.task_id, "x" * 129, "w1/m/1")


def test_a_transaction_conflict_with_a_heartbeat_is_tried_again(store, raw):
    running = claim(store, submit(store), owner="w1/m/1")

    # Cancelled with TransactionConflict (another write held the task item), twice.
    with faults.armed("dynamodb.TransactWriteItems=conflict count=2") as plan:
        assert store.record_effect(running.task_id, "charge", "w1/m/1") is True

    assert [r.hits for r in plan.rules] == [2]
    assert list(_ledger(raw, running.task_id)) == ["charge"]
