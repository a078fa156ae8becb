"""A tenant's backlog in the queued index (conveyor.schema.GSI_QUEUED): a task is in it until it
first starts or ends, a redriven one is again; the count stops at its limit."""

from __future__ import annotations

from conveyor.domain import TaskState
from store_support import LEASE, claim, dead, submit, succeeded
from support import wait_for


def test_tasks_waiting_count_and_started_or_ended_ones_do_not(store):
    tenant = "backlog-a"
    tasks = [submit(store, tenant=tenant) for _ in range(5)]
    started = claim(store, tasks[2])
    # A retry waits for its backoff, not for its first start: it stays out.
    store.transition(started, TaskState.QUEUED, detail="retry in 5s", remove=LEASE)
    succeeded(store, tasks[3])
    store.cancel(tasks[4], "not wanted")
    submit(store, tenant="backlog-b")  # another tenant's

    # The index is eventually consistent: wait for it to show the writes.
    wait_for(lambda: store.queued_count(tenant, 100) == 2, 15, "two waiting tasks in the index")
    assert store.queued_count(tenant, 1) == 1  # counted no further than asked
    assert store.oldest_queued_ms(tenant) == tasks[0].created_at_ms
    assert store.oldest_queued_ms("backlog-nobody") is None


def test_a_redriven_task_is_live_again_queued_since_its_redrive(store):
    tenant = "backlog-c"
    gone = dead(store, submit(store, tenant=tenant))
    wait_for(lambda: store.queued_count(tenant, 10) == 0, 15, "the dead task out of the index")
    again = store.transition(gone, TaskState.PENDING, detail="redriven")
    wait_for(lambda: store.queued_count(tenant, 10) == 1, 15, "the redriven task in the index")
    assert store.oldest_queued_ms(tenant) == again.updated_at_ms
