"""TaskStore.submit against the backend: one transaction, idempotency per tenant, races."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import conveyor.store as store_module
import pytest
from conveyor import schema
from conveyor.domain import TaskState
from conveyor.store import Conflict, IdempotencyMismatch, SubmitResult, now_ms
from store_support import TENANT, ddb_calls, submit


def test_submit_commits_task_payload_idempotency_and_outbox_mark_together(store, raw, settings):
    transactions = ddb_calls("TransactWriteItems")
    puts = ddb_calls("PutItem") + ddb_calls("UpdateItem")
    before = now_ms()
    task = submit(store, payload=b'{"n": 1}', key="order-1", max_attempts=4)
    after = now_ms()

    # One TransactWriteItems, and no other write.
    assert ddb_calls("TransactWriteItems") == transactions + 1
    assert ddb_calls("PutItem") + ddb_calls("UpdateItem") == puts

    items = raw.items()
    assert [(i["pk"], i["sk"]) for i in items] == sorted(
        [
            (f"IDEM#{TENANT}#order-1", "IDEM"),
            (f"TASK#{task.task_id}", "PAYLOAD"),
            (f"TASK#{task.task_id}", "TASK"),
        ]
    )
    idem, request, item = items
    assert item["task_id"] == task.task_id
    assert (item["tenant"], item["task_type"]) == (TENANT, "demo.sleep")
    # The payload is off the item every transition and heartbeat rewrites.
    assert "payload" not in item
    assert bytes(request["payload"].value) == b'{"n": 1}'
    assert (item["state"], item["version"], item["event_seq"]) == ("PENDING", 1, 1)
    assert (item["attempts"], item["max_attempts"]) == (0, 4)
    assert before <= item["created_at"] == item["updated_at"] <= after
    assert item["gsi1pk"] == f"TENANT#{TENANT}"
    assert item["gsi1sk"] == f"{int(item['created_at']):013d}#{task.task_id}"
    assert item["outbox_pk"] == f"OUTBOX#{int(task.task_id[:8], 16) % settings.outbox_shards}"
    assert item["outbox_at"] == item["created_at"]
    assert (item["queued_pk"], item["queued_at"]) == (f"TENANT#{TENANT}", item["created_at"])

    assert idem["task_id"] == task.task_id
    assert idem["request_hash"] == "h1"
    ttl = settings.idempotency_ttl_seconds
    assert before // 1000 + ttl <= idem[schema.TTL_ATTRIBUTE] <= after // 1000 + ttl

    (event,) = item["history"]
    assert event == {"s": 1, "t": "PENDING", "a": item["created_at"], "d": "submitted"}

    # Exactly these attributes, spelled so: the stored format that older items share.
    assert set(item) == {
        *("pk", "sk", "task_id", "tenant", "task_type", "state", "version", "event_seq"),
        *("attempts", "max_attempts", "created_at", "updated_at", "idempotency_key", "history"),
        *("gsi1pk", "gsi1sk", "outbox_pk", "outbox_at", "queued_pk", "queued_at"),
    }
    assert set(request) == {"pk", "sk", "payload"}  # no trace context was given

    # What submit returned is what was stored.
    stored = store.get(task.task_id)
    assert stored is not None
    assert stored.state == TaskState.PENDING
    assert stored == task.__class__(**{**task.__dict__, "events": stored.events})
    assert [(e.seq, e.from_state, e.to_state) for e in stored.events] == [
        (1, None, TaskState.PENDING)
    ]


def test_a_task_written_before_the_payload_item_keeps_its_payload(store, raw):
    """Tables written before the PAYLOAD item existed hold the payload on the task item: a
    worker reading such a task must not run it on an empty payload."""
    task = submit(store, payload=b'{"old": true}')
    request = raw.item(f"TASK#{task.task_id}", "PAYLOAD")
    raw.ddb.delete_item(
        TableName=raw.res.table, Key={"pk": {"S": f"TASK#{task.task_id}"}, "sk": {"S": "PAYLOAD"}}
    )
    raw.update(
        f"TASK#{task.task_id}",
        "TASK",
        "SET payload = :p, traceparent = :t",
        {":p": {"B": bytes(request["payload"].value)}, ":t": {"S": "00-old-01"}},
    )
    stored = store.get(task.task_id)
    assert stored is not None
    assert (stored.payload, stored.traceparent) == (b'{"old": true}', "00-old-01")


def test_a_replay_that_reads_the_task_item_without_its_payload_item_is_refused(store, raw):
    """A Query is read-committed, not atomic with a transaction (only TransactGetItems is): a
    replay racing the commit of a concurrent same-key submit can see the task item and the
    idempotency record without the PAYLOAD item. That view, made here by deleting the PAYLOAD
    item, must give a clear retryable error, never the task with an empty payload."""
    task = submit(store, payload=b'{"n": 1}', key="racing")
    raw.ddb.delete_item(
        TableName=raw.res.table, Key={"pk": {"S": f"TASK#{task.task_id}"}, "sk": {"S": "PAYLOAD"}}
    )
    items = raw.items()

    with pytest.raises(Conflict, match="PAYLOAD item"):
        store.submit(
            tenant=TENANT,
            task_type="demo.sleep",
            payload=b'{"n": 1}',
            idempotency_key="racing",
            request_hash="h1",
            max_attempts=3,
        )
    with pytest.raises(Conflict, match="PAYLOAD item"):
        store.get(task.task_id)
    assert raw.items() == items  # nothing written


def test_binary_payload_is_stored_byte_for_byte(store):
    payload = bytes(range(256)) * 256  # 64 KiB, every byte value
    task = submit(store, payload=payload)
    stored = store.get(task.task_id)
    assert stored is not None and stored.payload == payload


def test_replay_with_the_same_request_returns_the_task_and_writes_nothing(store, raw):
    first = submit(store, key="same")
    items = raw.items()
    transactions = ddb_calls("TransactWriteItems")

    again = store.submit(
        tenant=TENANT,
        task_type="demo.sleep",
        payload=b"{}",
        idempotency_key="same",
        request_hash="h1",
        max_attempts=3,
    )

    assert again == SubmitResult(first, created=False)
    assert raw.items() == items
    assert ddb_calls("TransactWriteItems") == transactions


def test_replay_returns_the_tasks_current_state(store):
    first = submit(store, key="k")
    store.transition(first, TaskState.QUEUED)
    again = store.submit(
        tenant=TENANT,
        task_type="demo.sleep",
        payload=b"{}",
        idempotency_key="k",
        request_hash="h1",
        max_attempts=3,
    )
    assert again.task.task_id == first.task_id
    assert again.task.state == TaskState.QUEUED


def test_same_key_with_a_different_request_is_a_mismatch(store, raw):
    first = submit(store, key="dup")
    items = raw.items()
    reads = ddb_calls("GetItem") + ddb_calls("Query")
    with pytest.raises(IdempotencyMismatch) as caught:
        submit(store, key="dup", request_hash="other")
    # The failed condition handed back the record: no read was needed to decide.
    assert ddb_calls("GetItem") + ddb_calls("Query") == reads
    assert (caught.value.key, caught.value.task_id) == ("dup", first.task_id)
    assert "dup" in str(caught.value) and first.task_id in str(caught.value)
    assert raw.items() == items


def test_idempotency_keys_are_scoped_per_tenant(store):
    acme = submit(store, tenant="acme", key="shared")
    globex = submit(store, tenant="globex", key="shared", request_hash="different")
    assert acme.task_id != globex.task_id
    assert (acme.tenant, globex.tenant) == ("acme", "globex")


def test_concurrent_submits_with_one_key_commit_exactly_one_task(store, raw):
    callers = 16
    start = threading.Barrier(callers)

    def one() -> SubmitResult:
        start.wait(timeout=10)
        return store.submit(
            tenant=TENANT,
            task_type="demo.sleep",
            payload=b"{}",
            idempotency_key="race",
            request_hash="h1",
            max_attempts=3,
        )

    with ThreadPoolExecutor(callers) as pool:
        results = [f.result(timeout=60) for f in [pool.submit(one) for _ in range(callers)]]

    tasks = [i for i in raw.items() if i["sk"] == "TASK"]
    assert len(tasks) == 1
    assert {r.task.task_id for r in results} == {tasks[0]["task_id"]}
    assert sum(r.created for r in results) == 1
    assert len([i for i in raw.items() if i["sk"] == "PAYLOAD"]) == 1


def test_an_expired_idempotency_record_lets_the_key_be_reused(store, raw):
    old = submit(store, key="reuse")
    # DynamoDB's TTL sweep may lag by days: the record is still there, but expired.
    raw.update(
        f"IDEM#{TENANT}#reuse",
        "IDEM",
        "SET expires_at = :past",
        {":past": {"N": str(now_ms() // 1000 - 10)}},
    )

    new = store.submit(
        tenant=TENANT,
        task_type="demo.sleep",
        payload=b"{}",
        idempotency_key="reuse",
        request_hash="another request",
        max_attempts=3,
    )

    assert new.created
    assert new.task.task_id != old.task_id
    record = raw.item(f"IDEM#{TENANT}#reuse", "IDEM")
    assert record is not None
    assert record["task_id"] == new.task.task_id
    assert record["request_hash"] == "another request"
    assert record["expires_at"] > now_ms() // 1000
    assert store.get(old.task_id) is not None  # the old task itself is untouched


def test_get_of_an_unknown_task_is_none(store):
    unknown = uuid.uuid4().hex
    assert store.get(unknown) is None
    assert store.get(unknown) is None


def test_a_key_whose_record_expires_during_the_submit_is_answered_not_looped(
    store, raw, monkeypatch
):
    """The idempotency record's condition compares its expiry with the submit's own clock
    reading; the cancelled transaction's record must be judged by that same reading. A record
    live for the condition but expired by a later reading would otherwise be committed again,
    unchanged, forever (the condition's time is fixed in the built items). Here the clock's
    first reading (the submit's) is in the record's last second and every later one after it,
    as happens when a submit straddles that second's end."""
    old = submit(store, key="straddle")
    expires = now_ms() // 1000 - 5
    raw.update(
        f"IDEM#{TENANT}#straddle",
        "IDEM",
        "SET expires_at = :e",
        {":e": {"N": str(expires)}},
    )
    real = store_module.now_ms
    reads = iter([expires * 1000 + 999])
    stop = threading.Event()

    def clock() -> int:
        if stop.is_set():
            raise RuntimeError("test over")  # ends a looping submit
        return next(reads, None) or real()

    monkeypatch.setattr(store_module, "now_ms", clock)
    transactions = ddb_calls("TransactWriteItems", "error") + ddb_calls("TransactWriteItems")
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(
                store.submit(
                    tenant=TENANT,
                    task_type="demo.sleep",
                    payload=b"{}",
                    idempotency_key="straddle",
                    request_hash="h1",
                    max_attempts=3,
                )
            )
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    # Done, or looping: more transactions than a submit ever needs (one, and one again).
    while thread.is_alive():
        sent = ddb_calls("TransactWriteItems", "error") + ddb_calls("TransactWriteItems")
        if sent - transactions > 5:
            break
        thread.join(0.05)
    stop.set()
    thread.join()
    sent = ddb_calls("TransactWriteItems", "error") + ddb_calls("TransactWriteItems")
    assert sent - transactions <= 2, f"{sent - transactions:g} transactions for one submit"
    # Live when the submit's condition was checked: the key answers with its task.
    (result,) = outcome
    assert isinstance(result, SubmitResult), result
    assert (result.created, result.task.task_id) == (False, old.task_id)
