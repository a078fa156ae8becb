"""The DynamoDB single-table layout, shared by the store and the Pulumi program.

Access patterns first (DESIGN.md §1):

| access pattern                         | key |
|----------------------------------------|------------------------------------------------------|
| task by id, with its history (one Query) | pk=TASK#<id>: sk=TASK (state, history) and sk=PAYLOAD |
| idempotency look-up by (tenant, key)   | pk=IDEM#<tenant>#<key>, sk=IDEM (TTL `expires_at`) |
| tenant's tasks, newest first           | GSI by_tenant: gsi1pk=TENANT#<tenant>, gsi1sk=<created> |
| (then a page's task items)             | BatchGetItem of their pk=TASK#<id>, sk=TASK |
| outbox marks older than N seconds      | sparse GSI outbox: outbox_pk=OUTBOX#<shard>, outbox_at |
| handler effect ledger (exactly-once)   | pk=EFFECT#<task id>, sk=<effect name> |

The task item (sk=TASK) is what every transition and heartbeat rewrites, and DynamoDB bills a
write by the whole item's size, so it stays small: its history is a bounded list inside it (one
conditional UpdateItem per transition, no event items), and the client's payload and trace
context live in the PAYLOAD item, written once at submit and never again.

Only task items carry the GSI attributes, and `outbox_pk`/`outbox_at` exist only while a task's
message is not yet known to be on the queue, so the outbox index holds just the pending marks.
The outbox partition is sharded so that a burst of submits does not heat one GSI partition.
"""

from __future__ import annotations

PK = "pk"
SK = "sk"
TTL_ATTRIBUTE = "expires_at"

GSI_BY_TENANT = "by_tenant"
GSI_BY_TENANT_PK = "gsi1pk"
GSI_BY_TENANT_SK = "gsi1sk"
# The index projects only what never changes, so transitions do not rewrite its entries (each
# rewrite is a billed write): a listing reads the task items of each page it finds in it.
GSI_BY_TENANT_PROJECTED = ("task_type",)
# What a listing reads of each task item: its summary, not its history.
LISTING_ATTRIBUTES = (
    "task_id",
    "tenant",
    "task_type",
    "state",
    "version",
    "attempts",
    "max_attempts",
    "created_at",
    "updated_at",
    "last_error",
    "idempotency_key",
)

GSI_OUTBOX = "outbox"
GSI_OUTBOX_PK = "outbox_pk"
GSI_OUTBOX_SK = "outbox_at"
GSI_OUTBOX_PROJECTED = ("task_id", "task_type")

# Attribute definitions: every key attribute of the table and its indexes, with its type.
KEY_ATTRIBUTES: dict[str, str] = {
    PK: "S",
    SK: "S",
    GSI_BY_TENANT_PK: "S",
    GSI_BY_TENANT_SK: "S",
    GSI_OUTBOX_PK: "S",
    GSI_OUTBOX_SK: "N",
}

# (name, hash key, range key, projected non-key attributes)
GLOBAL_SECONDARY_INDEXES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (GSI_BY_TENANT, GSI_BY_TENANT_PK, GSI_BY_TENANT_SK, GSI_BY_TENANT_PROJECTED),
    (GSI_OUTBOX, GSI_OUTBOX_PK, GSI_OUTBOX_SK, GSI_OUTBOX_PROJECTED),
)


def task_pk(task_id: str) -> str:
    return f"TASK#{task_id}"


def idempotency_pk(tenant: str, key: str) -> str:
    return f"IDEM#{tenant}#{key}"


def tenant_pk(tenant: str) -> str:
    return f"TENANT#{tenant}"


def outbox_pk(shard: int) -> str:
    return f"OUTBOX#{shard}"


def effect_pk(task_id: str) -> str:
    return f"EFFECT#{task_id}"


TASK_SK = "TASK"
PAYLOAD_SK = "PAYLOAD"

# On the task item: its history, a list of maps with one-letter keys (the item is billed by size).
HISTORY = "history"
EVENT_SEQ, EVENT_FROM, EVENT_TO, EVENT_AT = "s", "f", "t", "a"
EVENT_ATTEMPT, EVENT_DETAIL = "n", "d"

# On the task item: how many effects its handler recorded (CancelTask refuses once it is set).
EFFECTS_APPLIED = "effects_applied"
