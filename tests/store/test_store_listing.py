"""TaskStore.list_for_tenant over the by_tenant GSI: newest first, filters, paging, tenancy."""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ReadTimeoutError
from conveyor import schema
from conveyor.aws import DeadlineTooShort
from conveyor.domain import Task, TaskState
from conveyor.store import TaskStore
from conveyor_dev.inject import faults
from store_support import LEASE, claim, ddb_calls, next_ms, submit, succeeded

S = TaskState


def _submit_in_order(store: TaskStore, specs: list[tuple[str, str]]) -> list[Task]:
    """Submit (tenant, type) pairs, each in a later millisecond than the one before."""
    tasks, last = [], 0
    for tenant, task_type in specs:
        next_ms(last)
        task = submit(store, tenant=tenant, task_type=task_type)
        last = task.created_at_ms
        tasks.append(task)
    return tasks


def _ids(tasks) -> list[str]:
    return [t.task_id for t in tasks]


def test_newest_first_and_never_another_tenants_tasks(store):
    tasks = _submit_in_order(
        store,
        [
            ("acme", "a.x"),
            ("globex", "a.x"),
            ("acme", "a.y"),
            ("acme-eu", "a.x"),  # shares a prefix with acme
            ("acme", "a.x"),
        ],
    )
    acme = [t for t in tasks if t.tenant == "acme"]
    listed = list(store.list_for_tenant("acme"))
    assert _ids(listed) == _ids(reversed(acme))
    assert {t.tenant for t in listed} == {"acme"}
    assert _ids(store.list_for_tenant("globex")) == [tasks[1].task_id]
    assert _ids(store.list_for_tenant("acme-eu")) == [tasks[3].task_id]
    assert list(store.list_for_tenant("nobody")) == []


def test_listed_tasks_carry_the_summary_but_not_the_payload(store):
    task = submit(store, payload=b'{"big": "payload"}', key="k-1", max_attempts=7)
    [listed] = store.list_for_tenant("acme")
    assert listed.payload == b""  # not projected into the index: GetTask has it
    expected = {**task.__dict__, "payload": b"", "traceparent": "", "event_seq": 0, "events": ()}
    assert listed.__dict__ == expected


def test_a_listing_with_payloads_carries_payload_result_and_trace_context(store):
    tasks = [
        submit(store, payload=f'{{"n": {n}}}'.encode(), traceparent=f"00-{n:032x}-{n:016x}-01")
        for n in range(1, 4)
    ]
    tasks[0] = succeeded(store, tasks[0])
    listed = list(store.list_for_tenant("acme", with_payload=True, page_size=2))
    assert [(t.payload, t.result, t.traceparent) for t in listed] == [
        (t.payload, t.result, t.traceparent) for t in reversed(tasks)
    ]


def test_filters_by_state_type_or_both(store):
    a1, b1, a2, b2 = _submit_in_order(
        store, [("acme", "a"), ("acme", "b"), ("acme", "a"), ("acme", "b")]
    )
    store.transition(a1, S.QUEUED)
    store.transition(b2, S.QUEUED)
    running = claim(store, a2)
    store.transition(running, S.SUCCEEDED, remove=LEASE)

    assert _ids(store.list_for_tenant("acme", state=S.QUEUED)) == [b2.task_id, a1.task_id]
    assert _ids(store.list_for_tenant("acme", state=S.PENDING)) == [b1.task_id]
    assert _ids(store.list_for_tenant("acme", task_type="a")) == [a2.task_id, a1.task_id]
    assert _ids(store.list_for_tenant("acme", state=S.QUEUED, task_type="b")) == [b2.task_id]
    assert _ids(store.list_for_tenant("acme", state=S.SUCCEEDED)) == [a2.task_id]
    assert list(store.list_for_tenant("acme", state=S.DEAD)) == []
    # The index follows the item: listed states are current.
    assert [t.state for t in store.list_for_tenant("acme")] == [
        S.QUEUED,
        S.SUCCEEDED,
        S.PENDING,
        S.QUEUED,
    ]


def test_the_index_holds_only_what_never_changes_so_transitions_do_not_rewrite_it(
    store, raw, settings
):
    task = claim(store, submit(store))
    store.transition(task, S.SUCCEEDED, remove=LEASE, set_values={"result": b"r"})
    [entry] = raw.ddb.query(
        TableName=settings.table_name,
        IndexName=schema.GSI_BY_TENANT,
        KeyConditionExpression="gsi1pk = :g",
        ExpressionAttributeValues={":g": {"S": schema.tenant_pk("acme")}},
    )["Items"]
    assert set(entry) == {"pk", "sk", "gsi1pk", "gsi1sk", "task_type"}
    [listed] = store.list_for_tenant("acme")  # the state comes from the task item
    assert (listed.state, listed.attempts) == (S.SUCCEEDED, 1)


def test_small_pages_still_return_everything_in_order(store):
    tasks = _submit_in_order(store, [("acme", "t")] * 7 + [("globex", "t")] * 2)
    queries = ddb_calls("Query")
    listed = list(store.list_for_tenant("acme", page_size=2))
    assert _ids(listed) == _ids(reversed(tasks[:7]))
    assert ddb_calls("Query") - queries >= 4  # really paged: 2 + 2 + 2 + 1


def test_paging_with_a_filter_skips_non_matching_pages(store):
    # The Limit applies before the filter, so some pages come back empty: keep going.
    tasks = _submit_in_order(store, [("acme", "t")] * 6)
    store.transition(tasks[0], S.QUEUED)
    listed = list(store.list_for_tenant("acme", state=S.QUEUED, page_size=2))
    assert _ids(listed) == [tasks[0].task_id]


def test_listing_is_lazy(store):
    _submit_in_order(store, [("acme", "t")] * 5)
    queries = ddb_calls("Query")
    pages = store.list_for_tenant("acme", page_size=2)
    assert ddb_calls("Query") == queries  # nothing fetched until iterated
    next(pages)
    assert ddb_calls("Query") == queries + 1


def test_a_filter_that_matches_nothing_stops_at_the_deadline(store):
    for _ in range(12):
        submit(store)
    started = time.monotonic()
    # Each page takes 0.2 s: paging through all six would take 1.2 s, twice the deadline. The
    # listing ends when no call fits what is left, or when the last call's cut timeout hits.
    with (
        faults.armed("dynamodb.Query=hang seconds=0.2"),
        pytest.raises((DeadlineTooShort, ReadTimeoutError)),
    ):
        list(store.list_for_tenant("acme", state=S.SUCCEEDED, page_size=2, remaining=0.6))
    assert time.monotonic() - started < 0.9


def test_a_filter_that_matches_nothing_stops_when_the_caller_goes_away(store):
    for _ in range(12):
        submit(store)
    queries = ddb_calls("Query")
    pages_left = iter([True, True])  # the client is there for two pages, then gone

    listed = list(
        store.list_for_tenant(
            "acme", state=S.SUCCEEDED, page_size=2, keep_going=lambda: next(pages_left, False)
        )
    )

    assert listed == []
    assert ddb_calls("Query") - queries == 2  # not all six pages
