"""The task record codec: one table of a Task's fields, how each is serialised, and which
representations carry it. Every stored or sent form of a task is derived from `FIELDS`:

| representation | what it is                                                                    |
|----------------|-------------------------------------------------------------------------------|
| TASK           | the task item (sk=TASK), which every transition rewrites                      |
| PAYLOAD        | the PAYLOAD item, written once at submit (tables from before it existed hold  |
|                | these attributes on the task item, and they still read from there)            |
| LISTING        | what a listing reads of each task item: its summary, not its history          |
| SNAPSHOT       | the committed task in the body of the message sent at submit, so the worker   |
|                | claims it without a read (all of these must be there, or it is not used)      |
| BY_TENANT,     | projected into that index (changing these replaces the index: a migration)    |
| OUTBOX         |                                                                               |

A new Task field costs its dataclass field and one row here (tests/unit/test_codec.py checks
that the table covers the dataclass exactly). Attribute names are the stored format: renaming
one strands every item already written.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from conveyor.domain import DEFAULT_LANE, MAX_EVENT_DETAIL_CHARS, Task, TaskEvent, TaskState


class Rep(enum.Flag):
    TASK = enum.auto()
    PAYLOAD = enum.auto()
    LISTING = enum.auto()
    SNAPSHOT = enum.auto()
    BY_TENANT = enum.auto()
    OUTBOX = enum.auto()


TASK, PAYLOAD, LISTING, SNAPSHOT = Rep.TASK, Rep.PAYLOAD, Rep.LISTING, Rep.SNAPSHOT
BY_TENANT, OUTBOX = Rep.BY_TENANT, Rep.OUTBOX
# Most fields: on the task item, in a listing and in the snapshot.
SUMMARY = TASK | LISTING | SNAPSHOT


@dataclass(frozen=True)
class Kind:
    """How a value is stored (as boto3's TypeSerializer takes it, and back from what its
    TypeDeserializer gives) and sent in a snapshot (as JSON, and back)."""

    store: Callable[[Any], Any]
    load: Callable[[Any], Any]
    to_json: Callable[[Any], Any]
    from_json: Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def _expect(kind: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, kind):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return check


def _bytes(value: Any) -> bytes:
    return bytes(value.value) if isinstance(value, Binary) else bytes(value)


# A task's history: a list of maps with one-letter keys (the task item is billed by size).
EVENT_SEQ, EVENT_FROM, EVENT_TO, EVENT_AT = "s", "f", "t", "a"
EVENT_ATTEMPT, EVENT_DETAIL = "n", "d"


def event_value(event: TaskEvent) -> dict[str, Any]:
    """One history entry as stored (None and empty fields left out: the item is billed by size)."""
    value = {
        EVENT_SEQ: event.seq,
        EVENT_FROM: event.from_state.value if event.from_state else None,
        EVENT_TO: event.to_state.value,
        EVENT_AT: event.at_ms,
        EVENT_ATTEMPT: event.attempt or None,
        EVENT_DETAIL: event.detail[:MAX_EVENT_DETAIL_CHARS] or None,
    }
    return {k: v for k, v in value.items() if v is not None}


def _event(e: Mapping[str, Any]) -> TaskEvent:
    return TaskEvent(
        seq=int(e[EVENT_SEQ]),
        from_state=TaskState(e[EVENT_FROM]) if e.get(EVENT_FROM) else None,
        to_state=TaskState(e[EVENT_TO]),
        at_ms=int(e[EVENT_AT]),
        attempt=int(e.get(EVENT_ATTEMPT, 0)),
        detail=e.get(EVENT_DETAIL, ""),
    )


def _not_sent(value: Any) -> Any:
    raise TypeError("not part of a snapshot")


STR = Kind(_same, str, _same, _expect(str))
INT = Kind(_same, int, _same, _expect(int))
BYTES = Kind(
    bytes,
    _bytes,
    lambda b: base64.b64encode(b).decode(),
    lambda s: base64.b64decode(s, validate=True),
)
STATE = Kind(lambda s: s.value, TaskState, lambda s: s.value, TaskState)
HISTORY = Kind(
    lambda events: [event_value(e) for e in events],
    lambda stored: tuple(_event(e) for e in stored),
    _not_sent,
    _not_sent,
)

REQUIRED: Any = object()  # no default: an item or snapshot without it is not a task


@dataclass(frozen=True)
class Field:
    name: str  # the Task field
    attr: str  # its DynamoDB attribute, and its key in a snapshot is `name`
    kind: Kind
    reps: Rep  # the representations that carry it
    default: Any = REQUIRED  # its value when the attribute is absent, or removed
    always: bool = False  # written at submit even when it is at its default
    # Left out of a snapshot while at its default, and read as the default when absent: a
    # field added after snapshots were first sent (their messages still claim without a read).
    sparse: bool = False


# fmt: off
FIELDS: tuple[Field, ...] = (
    #     Task field             attribute           kind     carried by, default
    Field("task_id",             "task_id",          STR,     SUMMARY | OUTBOX),
    Field("tenant",              "tenant",           STR,     SUMMARY),
    Field("task_type",           "task_type",        STR,     SUMMARY | BY_TENANT | OUTBOX),
    Field("payload",             "payload",          BYTES,   PAYLOAD | SNAPSHOT, b"", always=True),
    Field("state",               "state",            STATE,   SUMMARY),
    Field("version",             "version",          INT,     SUMMARY),
    Field("attempts",            "attempts",         INT,     SUMMARY, 0, always=True),
    Field("max_attempts",        "max_attempts",     INT,     SUMMARY),
    Field("created_at_ms",       "created_at",       INT,     SUMMARY),
    Field("updated_at_ms",       "updated_at",       INT,     SUMMARY),
    Field("idempotency_key",     "idempotency_key",  STR,     SUMMARY, "", always=True),
    Field("last_error",          "last_error",       STR,     TASK | LISTING, ""),
    Field("result",              "result",           BYTES,   TASK, b""),
    Field("lease_owner",         "lease_owner",      STR,     TASK, ""),
    Field("lease_expires_at_ms", "lease_expires_at", INT,     TASK, 0),
    Field("event_seq",           "event_seq",        INT,     TASK | SNAPSHOT, 0),
    Field("traceparent",         "traceparent",      STR,     PAYLOAD | SNAPSHOT, ""),
    Field("effects_applied",     "effects_applied",  INT,     TASK, 0),
    Field("not_before_ms",       "not_before",       INT,     SUMMARY, 0, sparse=True),
    Field("start_by_ms",         "start_by",         INT,     SUMMARY, 0, sparse=True),
    Field("lane",                "lane",             STR,     SUMMARY, DEFAULT_LANE, sparse=True),
    Field("events",              "history",          HISTORY, TASK, ()),
)
# fmt: on

BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
_BY_ATTR: dict[str, Field] = {f.attr: f for f in FIELDS}


def attr(name: str) -> str:
    """The attribute that stores Task field `name` (KeyError for a name that is no field)."""
    return BY_NAME[name].attr


def on(rep: Rep) -> tuple[Field, ...]:
    return tuple(f for f in FIELDS if rep in f.reps)


def attributes(rep: Rep) -> tuple[str, ...]:
    return tuple(f.attr for f in on(rep))


# ---- DynamoDB ----
_ser = TypeSerializer()
_deser = TypeDeserializer()


def typed(values: Mapping[str, Any]) -> dict[str, Any]:
    """Plain values as DynamoDB attribute values (None left out)."""
    return {k: _ser.serialize(v) for k, v in values.items() if v is not None}


def plain(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deser.deserialize(v) for k, v in item.items()}


def item_values(task: Task, rep: Rep) -> dict[str, Any]:
    """The attributes of `task`'s TASK or PAYLOAD item as first written (plain values): a
    field at its default is left out unless it is required or kept when empty."""
    return {
        f.attr: f.kind.store(getattr(task, f.name))
        for f in on(rep)
        if f.default is REQUIRED or f.always or getattr(task, f.name) != f.default
    }


def task_from_item(item: Mapping[str, Any], payload_item: Mapping[str, Any] | None = None) -> Task:
    """The task from its item and, when read with it, its PAYLOAD item (a listing's items
    have neither the payload nor the history). A task written before the PAYLOAD item
    existed keeps the PAYLOAD attributes on its task item."""
    values = plain(item)
    extra = plain(payload_item) if payload_item else values
    fields: dict[str, Any] = {}
    for f in FIELDS:
        source = extra if PAYLOAD in f.reps else values
        if f.attr in source:
            fields[f.name] = f.kind.load(source[f.attr])
        elif f.default is REQUIRED:
            raise KeyError(f"task item without {f.attr!r}")
        else:
            fields[f.name] = f.default
    return Task(**fields)


def changes(values: Mapping[str, Any], removed: Iterable[str]) -> dict[str, Any]:
    """The Task fields an update of the task item changes when it sets `values` and removes
    `removed` (attribute names; those that are not fields, such as index keys, are skipped)."""
    changed = {f.name: f.kind.load(v) for a, v in values.items() if (f := _BY_ATTR.get(a))}
    changed.update({f.name: f.default for a in removed if (f := _BY_ATTR.get(a))})
    return changed


# ---- the SQS snapshot ----
def snapshot(task: Task) -> dict[str, Any]:
    """`task` as a message body carries it (JSON: bytes as base64, states by name)."""
    return {
        f.name: f.kind.to_json(getattr(task, f.name))
        for f in on(SNAPSHOT)
        if not (f.sparse and getattr(task, f.name) == f.default)
    }


def task_from_snapshot(value: Any) -> Task:
    """The task a snapshot carries; KeyError, TypeError or ValueError if it is not one. The
    fields it does not carry are at their defaults (a fresh task's)."""
    fields = {f.name: f.default for f in FIELDS if SNAPSHOT not in f.reps}
    fields.update(
        {
            f.name: f.kind.from_json(value[f.name])
            if f.name in value or not f.sparse
            else f.default
            for f in on(SNAPSHOT)
        }
    )
    return Task(**fields)
