"""The DynamoDB single-table layout, shared by the store and the Pulumi program.

Access patterns first (DESIGN.md §1):

| access pattern                         | key |
|----------------------------------------|------------------------------------------------------|
| task by id, with its history (one Query) | pk=TASK#<id>: sk=TASK (state, history) and sk=PAYLOAD |
| idempotency look-up by (tenant, key)   | pk=IDEM#<tenant>#<key>, sk=IDEM (TTL `expires_at`) |
| tenant's tasks, newest first           | GSI by_tenant: gsi1pk=TENANT#<tenant>, gsi1sk=<created> |
| (then a page's task items)             | BatchGetItem of their pk=TASK#<id>, sk=TASK |
| outbox marks older than N seconds      | sparse GSI outbox: outbox_pk=OUTBOX#<shard>, outbox_at |
| delayed tasks due by now, and the next | same GSI: outbox_pk=DUE#<shard>, outbox_at=<due time> |
| handler effect ledger (exactly-once)   | pk=EFFECT#<task id>, sk=<effect name> |
| a tenant's schedules (conveyor.schedule_store) | pk=SCHEDULES#<tenant>, sk=<name> |
| active schedules by next slot          | outbox GSI: outbox_pk=SCHEDULES, outbox_at=<next slot> |
| a tenant's tasks not yet started      | sparse GSI queued: queued_pk=TENANT#<tenant>, queued_at |

The attributes of the task and PAYLOAD items (and what a listing, the indexes and the SQS
snapshot carry of them) are defined once, field by field, in conveyor.tasks.codec.

The task item (sk=TASK) is what every transition and heartbeat rewrites, and DynamoDB bills a
write by the whole item's size, so it stays small: its history is a bounded list inside it (one
conditional UpdateItem per transition, no event items), and the client's payload and trace
context live in the PAYLOAD item, written once at submit and never again.

Only task items carry the GSI attributes, and `outbox_pk`/`outbox_at` exist only while a task's
message is not yet known to be on the queue, so the outbox index holds just the pending marks.
The outbox partition is sharded so that a burst of submits does not heat one GSI partition.
A delayed task's mark is dated at its due time, in the DUE# partitions of the same index: the
relay sends a DUE# mark once its time has come (no outbox age), an OUTBOX# mark once it is
older than the outbox age (the API's send has surely failed by then).
"""

from __future__ import annotations

from conveyor.tasks import codec

PK = "pk"
SK = "sk"
TTL_ATTRIBUTE = "expires_at"

GSI_BY_TENANT = "by_tenant"
GSI_BY_TENANT_PK = "gsi1pk"
GSI_BY_TENANT_SK = "gsi1sk"
# The index projects only what never changes, so transitions do not rewrite its entries (each
# rewrite is a billed write): a listing reads the task items of each page it finds in it.
GSI_BY_TENANT_PROJECTED = codec.attributes(codec.BY_TENANT)
# What a listing reads of each task item: its summary, not its history.
LISTING_ATTRIBUTES = codec.attributes(codec.LISTING)
# What a listing that asks for payloads reads besides: the result, and the PAYLOAD item.
LISTING_WITH_RESULT_ATTRIBUTES = (*LISTING_ATTRIBUTES, codec.attr("result"))
PAYLOAD_ATTRIBUTES = codec.attributes(codec.PAYLOAD)

GSI_OUTBOX = "outbox"
GSI_OUTBOX_PK = "outbox_pk"
GSI_OUTBOX_SK = "outbox_at"
GSI_OUTBOX_PROJECTED = codec.attributes(codec.OUTBOX)

# Set on a task item from its submit (or redrive) until its first start or its end: the tenant's
# queued count (a COUNT query, as many keys read as tasks counted) and its oldest waiting task
# (one key read) for the quotas and admission (conveyor.api.admission). A retry waiting for its
# backoff is not in it: freshness is about the first start. Each task costs two extra index
# writes (in, out); no other transition writes the index (the projected type never changes).
GSI_QUEUED = "queued"
GSI_QUEUED_PK = "queued_pk"
GSI_QUEUED_SK = "queued_at"
GSI_QUEUED_PROJECTED = (codec.attr("task_type"),)

# Attribute definitions: every key attribute of the table and its indexes, with its type.
KEY_ATTRIBUTES: dict[str, str] = {
    PK: "S",
    SK: "S",
    GSI_BY_TENANT_PK: "S",
    GSI_BY_TENANT_SK: "S",
    GSI_OUTBOX_PK: "S",
    GSI_OUTBOX_SK: "N",
    GSI_QUEUED_PK: "S",
    GSI_QUEUED_SK: "N",
}

# (name, hash key, range key, projected non-key attributes)
GLOBAL_SECONDARY_INDEXES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (GSI_BY_TENANT, GSI_BY_TENANT_PK, GSI_BY_TENANT_SK, GSI_BY_TENANT_PROJECTED),
    (GSI_OUTBOX, GSI_OUTBOX_PK, GSI_OUTBOX_SK, GSI_OUTBOX_PROJECTED),
    (GSI_QUEUED, GSI_QUEUED_PK, GSI_QUEUED_SK, GSI_QUEUED_PROJECTED),
)


_TASK_PREFIX = "TASK#"


def task_pk(task_id: str) -> str:
    return f"{_TASK_PREFIX}{task_id}"


def task_id_of(pk: str) -> str:
    """The task id of a task's partition key (`task_pk`)."""
    return pk.removeprefix(_TASK_PREFIX)


def idempotency_pk(tenant: str, key: str) -> str:
    return f"IDEM#{tenant}#{key}"


def tenant_pk(tenant: str) -> str:
    return f"TENANT#{tenant}"


def outbox_pk(shard: int) -> str:
    return f"OUTBOX#{shard}"


def due_pk(shard: int) -> str:
    return f"DUE#{shard}"


_SCHEDULES_PREFIX = "SCHEDULES#"
# The outbox index's partition of active schedules, dated at their next slot. One partition:
# schedules are few, and only the relay reads it.
SCHEDULES_DUE_PK = "SCHEDULES"


def schedules_pk(tenant: str) -> str:
    return f"{_SCHEDULES_PREFIX}{tenant}"


def schedule_tenant_of(pk: str) -> str:
    """The tenant of a schedule's partition key (`schedules_pk`)."""
    return pk.removeprefix(_SCHEDULES_PREFIX)


def effect_pk(task_id: str) -> str:
    return f"EFFECT#{task_id}"


TASK_SK = "TASK"
PAYLOAD_SK = "PAYLOAD"

# The idempotency record (pk=idempotency_pk, sk=IDEM_SK): the task it made and a hash of the
# request that made it, until TTL_ATTRIBUTE.
IDEM_SK = "IDEM"
IDEM_TASK_ID = "task_id"
IDEM_REQUEST_HASH = "request_hash"

# A ledger item (pk=effect_pk, sk=<effect name>): who recorded the effect, and when.
EFFECT_TASK_ID = "task_id"
EFFECT_OWNER = "owner"
EFFECT_AT = "at"
