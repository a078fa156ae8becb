"""The outbox marks on the sparse `outbox` GSI: sharded, found by age across every shard."""

from __future__ import annotations

import random

from conveyor.domain import TaskState
from conveyor.store import OutboxMark, now_ms
from store_support import submit


def _tasks_over_shards(store, settings, minimum_shards: int = 3, most: int = 60):
    """Submit until the tasks' outbox marks sit in at least `minimum_shards` shards."""
    tasks = []
    while len({store.outbox_shard(t.task_id) for t in tasks}) < minimum_shards:
        assert len(tasks) < most, "task ids did not spread over the outbox shards"
        tasks.append(submit(store, task_type=f"t.{len(tasks)}"))
    assert settings.outbox_shards >= minimum_shards
    return tasks


def _age(raw, tasks, base: int) -> dict[str, int]:
    """Give each task's mark a distinct time, in shuffled order; returns task id -> time."""
    at = {}
    order = list(range(len(tasks)))
    random.Random(7).shuffle(order)
    for task, rank in zip(tasks, order, strict=True):
        at[task.task_id] = base + rank * 1000
        raw.update(
            f"TASK#{task.task_id}",
            "TASK",
            "SET outbox_at = :at",
            {":at": {"N": str(base + rank * 1000)}},
        )
    return at


def test_marks_are_written_to_the_tasks_shard(store, settings, raw):
    for task in _tasks_over_shards(store, settings):
        item = raw.task_item(task.task_id)
        assert item is not None
        shard = int(task.task_id[:8], 16) % settings.outbox_shards
        assert store.outbox_shard(task.task_id) == shard
        assert item["outbox_pk"] == f"OUTBOX#{shard}"


def test_only_older_marks_oldest_first_across_shards(store, settings, raw):
    tasks = _tasks_over_shards(store, settings)
    base = now_ms() - 3_600_000
    at = _age(raw, tasks, base)
    cutoff = base + (len(tasks) // 2) * 1000 + 500

    marks = store.outbox_marks(cutoff, 1000)

    expected = sorted((t for t in tasks if at[t.task_id] < cutoff), key=lambda t: at[t.task_id])
    assert marks == [OutboxMark(t.task_id, t.task_type, at[t.task_id]) for t in expected]
    assert len({store.outbox_shard(m.task_id) for m in marks}) >= 2
    # Strictly older: a mark exactly at the cut-off is not included.
    exact = store.outbox_marks(base + 1000, 1000)
    assert [m.marked_at_ms for m in exact] == [base]


def test_the_limit_keeps_the_oldest_overall(store, settings, raw):
    tasks = _tasks_over_shards(store, settings)
    at = _age(raw, tasks, now_ms() - 3_600_000)
    oldest = sorted(tasks, key=lambda t: at[t.task_id])[:2]
    assert [m.task_id for m in store.outbox_marks(now_ms(), 2)] == [t.task_id for t in oldest]


def test_queued_tasks_have_no_mark(store, settings):
    tasks = _tasks_over_shards(store, settings)
    for task in tasks[1:]:
        store.transition(task, TaskState.QUEUED)
    assert [m.task_id for m in store.outbox_marks(now_ms() + 1, 100)] == [tasks[0].task_id]
