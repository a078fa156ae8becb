"""The task record codec (conveyor.tasks.codec): its table covers the Task dataclass, and the
forms it derives are the stored and sent formats that items and messages already in flight use
(the literals below are those formats, as the code before the codec wrote them)."""

from __future__ import annotations

import base64
import dataclasses

from boto3.dynamodb.types import TypeSerializer
from conveyor import schema
from conveyor.domain import Task, TaskEvent, TaskState
from conveyor.tasks import codec
from hypothesis import given
from hypothesis import strategies as st

_ser = TypeSerializer()

TASK = Task(
    task_id="0" * 31 + "1",
    tenant="acme",
    task_type="demo.sleep",
    payload=bytes(range(256)),
    state=TaskState.RUNNING,
    version=3,
    attempts=1,
    max_attempts=3,
    created_at_ms=1_700_000_000_000,
    updated_at_ms=1_700_000_000_500,
    idempotency_key="k1",
    last_error="boom",
    result=b"r",
    lease_owner="w1/m1/1",
    lease_expires_at_ms=1_700_000_030_500,
    event_seq=3,
    traceparent="00-abc-01",
    effects_applied=2,
    events=(
        TaskEvent(1, None, TaskState.PENDING, 1_700_000_000_000, 0, "submitted"),
        TaskEvent(2, TaskState.PENDING, TaskState.QUEUED, 1_700_000_000_500, 1, "x"),
        TaskEvent(3, TaskState.QUEUED, TaskState.RUNNING, 1_700_000_000_500, 1),
    ),
)


def typed(values: dict) -> dict:
    return {k: _ser.serialize(v) for k, v in values.items()}


# The task item and PAYLOAD item of TASK as stored (pre-codec spelling).
STORED_TASK_ITEM = typed(
    {
        "pk": f"TASK#{TASK.task_id}",
        "sk": "TASK",
        "task_id": TASK.task_id,
        "tenant": "acme",
        "task_type": "demo.sleep",
        "state": "RUNNING",
        "version": 3,
        "event_seq": 3,
        "attempts": 1,
        "max_attempts": 3,
        "created_at": 1_700_000_000_000,
        "updated_at": 1_700_000_000_500,
        "idempotency_key": "k1",
        "last_error": "boom",
        "result": b"r",
        "lease_owner": "w1/m1/1",
        "lease_expires_at": 1_700_000_030_500,
        "effects_applied": 2,
        "history": [
            {"s": 1, "t": "PENDING", "a": 1_700_000_000_000, "d": "submitted"},
            {"s": 2, "f": "PENDING", "t": "QUEUED", "a": 1_700_000_000_500, "n": 1, "d": "x"},
            {"s": 3, "f": "QUEUED", "t": "RUNNING", "a": 1_700_000_000_500, "n": 1},
        ],
        "gsi1pk": "TENANT#acme",
        "gsi1sk": f"1700000000000#{TASK.task_id}",
    }
)
STORED_PAYLOAD_ITEM = typed(
    {
        "pk": f"TASK#{TASK.task_id}",
        "sk": "PAYLOAD",
        "payload": bytes(range(256)),
        "traceparent": "00-abc-01",
    }
)


def test_the_table_covers_the_task_dataclass_exactly_once():
    names = [f.name for f in codec.FIELDS]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(Task))
    assert len({f.attr for f in codec.FIELDS}) == len(codec.FIELDS)


def test_a_stored_task_reads_back():
    assert codec.task_from_item(STORED_TASK_ITEM, STORED_PAYLOAD_ITEM) == TASK


def test_a_task_item_from_before_the_payload_item_reads_its_payload_from_the_task_item():
    old = {**STORED_TASK_ITEM, **typed({"payload": b"old", "traceparent": "00-old-01"})}
    task = codec.task_from_item(old)
    assert (task.payload, task.traceparent) == (b"old", "00-old-01")


def test_a_submitted_task_is_written_as_before():
    fresh = dataclasses.replace(
        TASK,
        state=TaskState.PENDING,
        version=1,
        attempts=0,
        updated_at_ms=TASK.created_at_ms,
        last_error="",
        result=b"",
        lease_owner="",
        lease_expires_at_ms=0,
        event_seq=1,
        traceparent="",
        effects_applied=0,
        events=TASK.events[:1],
    )
    assert codec.item_values(fresh, codec.TASK) == {
        "task_id": TASK.task_id,
        "tenant": "acme",
        "task_type": "demo.sleep",
        "state": "PENDING",
        "version": 1,
        "event_seq": 1,
        "attempts": 0,  # written although 0
        "max_attempts": 3,
        "created_at": 1_700_000_000_000,
        "updated_at": 1_700_000_000_000,
        "idempotency_key": "k1",
        "history": [{"s": 1, "t": "PENDING", "a": 1_700_000_000_000, "d": "submitted"}],
    }
    assert codec.item_values(fresh, codec.PAYLOAD) == {"payload": bytes(range(256))}


def test_the_listing_and_the_indexes_project_what_they_did():
    assert set(schema.LISTING_ATTRIBUTES) == {
        *("task_id", "tenant", "task_type", "state", "version", "attempts", "max_attempts"),
        *("created_at", "updated_at", "last_error", "idempotency_key", "not_before", "start_by"),
        "lane",
    }
    assert schema.GSI_BY_TENANT_PROJECTED == ("task_type",)
    assert schema.GSI_OUTBOX_PROJECTED == ("task_id", "task_type")


def test_a_listed_item_reads_without_payload_history_or_lease():
    listed = {a: v for a, v in STORED_TASK_ITEM.items() if a in schema.LISTING_ATTRIBUTES}
    task = codec.task_from_item(listed)
    assert (task.payload, task.events, task.event_seq, task.lease_owner) == (b"", (), 0, "")
    assert (task.state, task.last_error) == (TaskState.RUNNING, "boom")


# A snapshot as the API sent it before the codec: messages sent then must still be claimed.
OLD_SNAPSHOT = {
    "task_id": TASK.task_id,
    "tenant": "acme",
    "task_type": "demo.sleep",
    "version": 3,
    "attempts": 1,
    "max_attempts": 3,
    "created_at_ms": 1_700_000_000_000,
    "updated_at_ms": 1_700_000_000_500,
    "idempotency_key": "k1",
    "event_seq": 3,
    "traceparent": "00-abc-01",
    "state": "RUNNING",
    "payload": base64.b64encode(bytes(range(256))).decode(),
}


def test_the_snapshot_is_sent_and_read_as_before():
    assert codec.snapshot(TASK) == OLD_SNAPSHOT
    assert codec.task_from_snapshot(OLD_SNAPSHOT) == dataclasses.replace(
        TASK,
        last_error="",
        result=b"",
        lease_owner="",
        lease_expires_at_ms=0,
        effects_applied=0,
        events=(),
    )


def test_a_lane_other_than_the_default_is_stored_listed_and_sent_and_the_default_is_not():
    high = dataclasses.replace(TASK, lane="high")
    assert codec.item_values(high, codec.TASK)["lane"] == "high"
    assert "lane" not in codec.item_values(TASK, codec.TASK)  # older items read as default
    assert codec.task_from_item(typed(codec.item_values(high, codec.TASK))).lane == "high"
    assert codec.task_from_snapshot(codec.snapshot(high)).lane == "high"
    assert codec.task_from_item(STORED_TASK_ITEM).lane == "default"


def test_an_update_maps_attributes_to_field_changes():
    assert codec.changes(
        {"state": "QUEUED", "attempts": 0, "outbox_pk": "OUTBOX#1"},
        ["lease_owner", "lease_expires_at", "outbox_at"],
    ) == {"state": TaskState.QUEUED, "attempts": 0, "lease_owner": "", "lease_expires_at_ms": 0}


@given(
    payload=st.binary(max_size=64),
    attempts=st.integers(0, 20),
    error=st.text(max_size=20),
    owner=st.text(max_size=20),
    trace=st.text(max_size=20),
)
def test_any_task_survives_its_items_and_its_snapshot(payload, attempts, error, owner, trace):
    task = dataclasses.replace(
        TASK,
        payload=payload,
        attempts=attempts,
        last_error=error,
        lease_owner=owner,
        traceparent=trace,
    )
    item = codec.typed(codec.item_values(task, codec.TASK))
    payload_item = codec.typed(codec.item_values(task, codec.PAYLOAD))
    assert codec.task_from_item(item, payload_item) == task
    sent = codec.task_from_snapshot(codec.snapshot(task))
    assert sent == dataclasses.replace(
        task,
        last_error="",
        result=b"",
        lease_owner="",
        lease_expires_at_ms=0,
        effects_applied=0,
        events=(),
    )
