"""The DynamoDB single-table task store (layout: conveyor.schema; the task's attributes:
conveyor.tasks.codec).

Every state change is one conditional UpdateItem of the task item: expected state, version and
event sequence, plus any lease condition; it appends the change's events to the history inside
the item. The version condition makes the sequence number race-free, and it makes every write
safe to retry: a retried write whose first try landed fails its condition instead of applying
twice (and recognises its own events). Submitting, and recording a handler's effect, are the
two transactions. Reads that decide a write are strongly consistent.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pybreaker
from botocore.exceptions import ClientError

from conveyor import schema
from conveyor.aws import AwsClients, cancellation_reasons, error_code, guarded
from conveyor.domain import (
    DEFAULT_LANE,
    EFFECT_NAME_RE,
    MAX_EVENT_DETAIL_CHARS,
    MAX_HISTORY_EVENTS,
    Task,
    TaskEvent,
    TaskState,
    check_transition,
)
from conveyor.settings import StoreSettings
from conveyor.tasks import codec
from conveyor.tasks.codec import plain as _plain
from conveyor.tasks.codec import task_from_item
from conveyor.tasks.codec import typed as _item

# Attributes present only while a task's message is not yet known to be on the queue.
OUTBOX_ATTRIBUTES = (schema.GSI_OUTBOX_PK, schema.GSI_OUTBOX_SK)
# Attributes present only while a task waits for its first start (the tenant's queued index).
QUEUED_ATTRIBUTES = (schema.GSI_QUEUED_PK, schema.GSI_QUEUED_SK)

# The task item attributes the store's own conditions and writes name.
_STATE, _VERSION, _SEQ, _UPDATED, _ATTEMPTS, _EFFECTS = (
    codec.attr(f)
    for f in ("state", "version", "event_seq", "updated_at_ms", "attempts", "effects_applied")
)
_HISTORY = codec.attr("events")
LEASE_ATTRIBUTES = (codec.attr("lease_owner"), codec.attr("lease_expires_at_ms"))
# What a transition writes: every task item field but the history (appended, and compared
# on its own) and the effect count (record_effect's, which leaves the version alone).
_TRANSITION_FIELDS = tuple(
    f.name for f in codec.on(codec.TASK) if f.attr not in (_HISTORY, _EFFECTS)
)


# The detail of an event recorded on the way (`via`): it happened, but nobody wrote it then.
VIA_DETAIL = "on the queue (recorded with the next step)"

# Cancellation reasons that mean "the items changed under you": re-read and decide again.
CONFLICT_REASONS = frozenset({"ConditionalCheckFailed", "TransactionConflict"})


class Conflict(Exception):
    """A conditional write found the item changed (state, version or lease): re-read it."""


class LeaseLost(Exception):
    """A write fenced by a lease found the task no longer RUNNING under that lease: it was
    cancelled, taken over by another worker, or finished. Nothing was written."""


class EffectsApplied(Exception):
    """The task's handler already recorded an effect, so the task can no longer be cancelled:
    it runs to its end instead (see TaskStore.record_effect)."""

    def __init__(self, task_id: str, count: int) -> None:
        super().__init__(
            f"task {task_id} already applied {count} effect(s); it cannot be cancelled now"
        )
        self.task_id = task_id


class IdempotencyMismatch(Exception):
    """The idempotency key was used before with a different request."""

    def __init__(self, key: str, task_id: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used for task {task_id} with a different "
            "request; use a new key for a new request"
        )
        self.key = key
        self.task_id = task_id


@dataclass(frozen=True)
class SubmitResult:
    task: Task
    created: bool


@dataclass(frozen=True)
class NewTask:
    """A task to commit, as a submit asks for it."""

    tenant: str
    task_type: str
    payload: bytes
    idempotency_key: str
    request_hash: str
    max_attempts: int
    traceparent: str = ""
    not_before_ms: int = 0
    start_by_ms: int = 0
    lane: str = DEFAULT_LANE


# A submit writes ITEMS_PER_TASK items in its transaction (the task item, its idempotency record
# at _IDEM_ITEM, its PAYLOAD item). TransactWriteItems takes at most 100 items, so one batch
# submit commits at most 100 // 3 = 33 tasks.
ITEMS_PER_TASK, _IDEM_ITEM = 3, 1
MAX_TRANSACTION_ITEMS = 100
MAX_BATCH_TASKS = MAX_TRANSACTION_ITEMS // ITEMS_PER_TASK


@dataclass(frozen=True)
class OutboxMark:
    task_id: str
    task_type: str
    marked_at_ms: int


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _cancelled_item(exc: BaseException | None, index: int) -> dict[str, Any] | None:
    """The item a cancelled transaction returned for its `index`-th action, when that action's
    condition failed with ReturnValuesOnConditionCheckFailure=ALL_OLD."""
    if exc is None or not cancellation_reasons(exc):
        return None
    reasons = exc.response.get("CancellationReasons", [])  # type: ignore[attr-defined]
    if index >= len(reasons) or reasons[index].get("Code") != "ConditionalCheckFailed":
        return None
    item = reasons[index].get("Item")
    return dict(item) if item else None


def _cancel_code(exc: BaseException | None, index: int) -> str | None:
    """The cancellation reason code of a cancelled transaction's `index`-th action."""
    if exc is None or not cancellation_reasons(exc):
        return None
    reasons = exc.response.get("CancellationReasons", [])  # type: ignore[attr-defined]
    return str(reasons[index].get("Code")) if index < len(reasons) else None


def _kept_history(task: Task, events: tuple[TaskEvent, ...]) -> tuple[TaskEvent, ...] | None:
    """None while `events` can simply be appended; past MAX_HISTORY_EVENTS, the whole history to
    write instead: the latest events of `task`, which must then have been read with its history
    (Conflict otherwise, so the caller reads it and decides again)."""
    if task.event_seq + len(events) <= MAX_HISTORY_EVENTS:
        return None
    if len(task.events) != min(task.event_seq, MAX_HISTORY_EVENTS):
        raise Conflict(f"task {task.task_id}: its history must be read before it is trimmed")
    return (*task.events, *events)[-MAX_HISTORY_EVENTS:]


def _task_key(task_id: str) -> dict[str, Any]:
    return _item({schema.PK: schema.task_pk(task_id), schema.SK: schema.TASK_SK})


def _applied(
    task: Task, values: Mapping[str, Any], removed: list[str], events: tuple[TaskEvent, ...]
) -> Task:
    """`task` after a successful update that set `values`, removed `removed` and appended
    `events` (to its history too, when `task` was read with its whole history)."""
    changes = codec.changes(values, removed)
    if len(task.events) == min(task.event_seq, MAX_HISTORY_EVENTS):
        changes["events"] = (*task.events, *events)[-MAX_HISTORY_EVENTS:]
    return replace(task, **changes)


class TaskStore:
    def __init__(
        self, clients: AwsClients, settings: StoreSettings, breaker: pybreaker.CircuitBreaker
    ) -> None:
        self._clients = clients
        self._settings = settings
        self._breaker = breaker
        self.table = settings.table_name

    # ---- plumbing ----
    def _call(self, operation: str, remaining: float | None = None, **kwargs: Any) -> Any:
        client = self._clients.client("dynamodb", remaining)
        return guarded(self._breaker, getattr(client, operation), **kwargs)

    def _write_if(self, operation: str, remaining: float | None = None, **kwargs: Any) -> bool:
        """A conditional write: True if applied, False if its condition did not hold."""
        try:
            self._call(operation, remaining, **kwargs)
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _transact(self, items: list[dict[str, Any]], remaining: float | None, token: str) -> None:
        """TransactWriteItems; Conflict only when a condition failed or another transaction
        held an item. Throttling or validation cancellations propagate as the errors they are
        (the breaker counts throttling; nothing should re-read and retry a validation error)."""
        try:
            self._call(
                "transact_write_items",
                remaining,
                TransactItems=items,
                ClientRequestToken=token,
            )
        except ClientError as exc:
            reasons = cancellation_reasons(exc)
            if reasons and reasons <= CONFLICT_REASONS:
                raise Conflict(f"transaction cancelled: {sorted(reasons)}") from exc
            raise

    def outbox_shard(self, task_id: str) -> int:
        return int(task_id[:8], 16) % self._settings.outbox_shards

    def outbox_mark(self, task_id: str, at_ms: int) -> dict[str, Any]:
        """The attributes that put a task in the sparse outbox index (set while PENDING)."""
        return {
            schema.GSI_OUTBOX_PK: schema.outbox_pk(self.outbox_shard(task_id)),
            schema.GSI_OUTBOX_SK: at_ms,
        }

    def due_mark(self, task_id: str, due_ms: int) -> dict[str, Any]:
        """The attributes of a delayed task's mark: the outbox index, dated at its due time."""
        return {
            schema.GSI_OUTBOX_PK: schema.due_pk(self.outbox_shard(task_id)),
            schema.GSI_OUTBOX_SK: due_ms,
        }

    # ---- reads ----
    @staticmethod
    def queued_mark(tenant: str, at_ms: int) -> dict[str, Any]:
        """The attributes that put a task in its tenant's queued index (set while live)."""
        return {schema.GSI_QUEUED_PK: schema.tenant_pk(tenant), schema.GSI_QUEUED_SK: at_ms}

    def get(self, task_id: str, *, remaining: float | None = None) -> Task | None:
        """The task with its history and payload: one strongly consistent Query of its two
        items (billed as one read of both; a GetItem of the task item alone would cost the same
        request and lack the payload a worker runs). Conflict if it caught a submit mid-commit:
        a Query is read-committed, not atomic with a transaction, so it can see the task item
        without the PAYLOAD item (a replay racing a same-key submit); never an empty payload."""
        resp = self._call(
            "query",
            remaining,
            TableName=self.table,
            KeyConditionExpression="#pk = :pk",
            ExpressionAttributeNames={"#pk": schema.PK},
            ExpressionAttributeValues=_item({":pk": schema.task_pk(task_id)}),
            ConsistentRead=True,
        )
        items = {raw[schema.SK]["S"]: raw for raw in resp.get("Items", [])}
        if schema.TASK_SK not in items:
            return None
        task_item, payload_item = items[schema.TASK_SK], items.get(schema.PAYLOAD_SK)
        if payload_item is None and codec.attr("payload") not in task_item:
            raise Conflict(f"task {task_id}: read before its PAYLOAD item was committed; retry")
        return task_from_item(task_item, payload_item)

    def get_many(
        self, task_ids: Sequence[str], *, remaining: float | None = None
    ) -> dict[str, Task]:
        """The tasks of `task_ids` (at most 100) that exist, by id, as `get` reads them but
        without their payload (Task.payload empty): for a caller that sends them by reference,
        not one that runs them (the relay). Two strongly consistent BatchGetItems: the task
        items, and the trace context of their PAYLOAD items."""
        ids = list(task_ids)
        if not ids:
            return {}
        deadline = None if remaining is None else time.monotonic() + remaining

        def left() -> float | None:
            return None if deadline is None else deadline - time.monotonic()

        items = self._batch_items(ids, schema.TASK_SK, codec.attributes(codec.TASK), left())
        found = [t for t in ids if t in items]
        traces = self._batch_items(found, schema.PAYLOAD_SK, (codec.attr("traceparent"),), left())
        return {t: task_from_item(items[t], traces.get(t)) for t in found}

    def list_for_tenant(
        self,
        tenant: str,
        *,
        state: TaskState | None = None,
        task_type: str | None = None,
        page_size: int = 25,
        remaining: float | None = None,
        keep_going: Callable[[], bool] = lambda: True,
        with_payload: bool = False,
    ) -> Iterator[Task]:
        """The tenant's tasks newest first, fetched a page at a time as the caller iterates.

        Each page is a Query of the by_tenant index (which filters by task type) and a strongly
        consistent BatchGetItem of the page's task items (which the state filter is applied
        to), so a listing shows each task's current state. A filter that matches nothing pages
        through the tenant's whole index without yielding. `with_payload` reads the tasks'
        results and the page's PAYLOAD items too (payload, trace context: one more
        BatchGetItem). Before each
        page the deadline (`remaining` seconds from now; DeadlineTooShort once it cannot cover
        a call) and `keep_going` (e.g. the RPC is still active; False ends the listing) are
        checked."""
        deadline = None if remaining is None else time.monotonic() + remaining
        names = {"#g": schema.GSI_BY_TENANT_PK}
        values: dict[str, Any] = {":g": schema.tenant_pk(tenant)}
        filters = []
        if task_type:
            names["#type"] = codec.attr("task_type")
            values[":type"] = task_type
            filters.append("#type = :type")
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": schema.GSI_BY_TENANT,
            "KeyConditionExpression": "#g = :g",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": _item(values),
            "ScanIndexForward": False,
            "Limit": page_size,
        }
        if filters:
            kwargs["FilterExpression"] = " AND ".join(filters)
        while keep_going():
            left = None if deadline is None else deadline - time.monotonic()
            resp = self._call("query", left, **kwargs)
            ids = [schema.task_id_of(_plain(raw)[schema.PK]) for raw in resp.get("Items", [])]
            left = None if deadline is None else deadline - time.monotonic()
            attributes = (
                schema.LISTING_WITH_RESULT_ATTRIBUTES if with_payload else schema.LISTING_ATTRIBUTES
            )
            items = self._batch_items(ids, schema.TASK_SK, attributes, left)
            payloads: dict[str, Any] = {}
            if with_payload:
                left = None if deadline is None else deadline - time.monotonic()
                payloads = self._batch_items(
                    ids, schema.PAYLOAD_SK, schema.PAYLOAD_ATTRIBUTES, left
                )
            for task_id in ids:
                if task_id in items:  # (tasks are never deleted; this is just not a KeyError)
                    task = task_from_item(items[task_id], payloads.get(task_id))
                    if state is None or task.state == state:
                        yield task
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def _batch_items(
        self, task_ids: list[str], sk: str, attributes: tuple[str, ...], remaining: float | None
    ) -> dict[str, Any]:
        """The `sk` items of `task_ids` (at most 100), by id, with `attributes`: one
        BatchGetItem, plus one more for any keys DynamoDB left unprocessed (it does under
        throttling), each after a back-off, until the deadline. Strongly consistent: a listing
        shows current states."""
        deadline = None if remaining is None else time.monotonic() + remaining
        names = {f"#a{i}": a for i, a in enumerate((schema.PK, *attributes))}
        request: dict[str, Any] = {
            self.table: {
                "Keys": [_item({schema.PK: schema.task_pk(t), schema.SK: sk}) for t in task_ids],
                "ConsistentRead": True,
                "ProjectionExpression": ", ".join(names),
                "ExpressionAttributeNames": names,
            }
        }
        found: dict[str, Any] = {}
        for pause in _UNPROCESSED_BACKOFF:
            if not request[self.table]["Keys"]:
                break
            left = None if deadline is None else deadline - time.monotonic()
            resp = self._call("batch_get_item", left, RequestItems=request)
            for raw in resp.get("Responses", {}).get(self.table, []):
                found[schema.task_id_of(raw[schema.PK]["S"])] = raw
            unprocessed = resp.get("UnprocessedKeys", {}).get(self.table)
            if not unprocessed:
                break
            request = {self.table: unprocessed}
            # Never past the deadline: the next call then fails with DeadlineTooShort.
            time.sleep(
                pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic()))
            )
        else:
            # What AWS leaves keys unprocessed for; the API answers UNAVAILABLE, retry later.
            error = {
                "Code": "ProvisionedThroughputExceededException",
                "Message": f"{len(request[self.table]['Keys'])} task items stayed unprocessed",
            }
            raise ClientError({"Error": error}, "BatchGetItem")
        return found

    # ---- submit ----
    def submit(
        self,
        *,
        tenant: str,
        task_type: str,
        payload: bytes,
        idempotency_key: str,
        request_hash: str,
        max_attempts: int,
        traceparent: str = "",
        not_before_ms: int = 0,
        start_by_ms: int = 0,
        lane: str = DEFAULT_LANE,
        remaining: float | None = None,
    ) -> SubmitResult:
        """Commit the task item (with its first event and outbox mark), its PAYLOAD item and the
        idempotency record in one transaction (submit_many of one; IdempotencyMismatch raised).
        """
        new = NewTask(
            tenant=tenant,
            task_type=task_type,
            payload=payload,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            max_attempts=max_attempts,
            traceparent=traceparent,
            not_before_ms=not_before_ms,
            start_by_ms=start_by_ms,
            lane=lane,
        )
        [result] = self.submit_many([new], remaining=remaining)
        if isinstance(result, IdempotencyMismatch):
            raise result
        return result

    def submit_many(
        self, new: Sequence[NewTask], *, remaining: float | None = None
    ) -> list[SubmitResult | IdempotencyMismatch]:
        """Commit every task of `new` whose idempotency key is free, in one transaction of
        ITEMS_PER_TASK items each (so at most MAX_BATCH_TASKS), and answer each: created,
        replayed (its key made a task from the same request), or IdempotencyMismatch.

        No read first: each idempotency record's Put is conditional (absent or expired), so the
        keys are checked by DynamoDB before anything is written, and two concurrent submits with
        one key commit exactly one task. When keys are taken, the cancelled transaction names
        them (a reason per item) and hands back their records
        (ReturnValuesOnConditionCheckFailure), which decide replay or mismatch; the rest are
        committed again without them. A transaction cancelled for another reason (a concurrent
        commit of the same key) raises Conflict, nothing committed: the whole call is safe to
        retry. A task whose `not_before_ms` lies ahead gets a due mark dated then instead of an
        outbox mark (`due_mark`), which the relay sends when it comes.
        """
        at = now_ms()
        built = [self._new_items(n, at) for n in new]
        results: dict[int, SubmitResult | IdempotencyMismatch] = {}
        while len(results) < len(new):
            left = [i for i in range(len(new)) if i not in results]
            items = [item for i in left for item in built[i][1]]
            try:
                self._transact(items, remaining, token=uuid.uuid4().hex)
            except Conflict as exc:
                taken = [
                    (i, _cancelled_item(exc.__cause__, pos * ITEMS_PER_TASK + _IDEM_ITEM))
                    for pos, i in enumerate(left)
                    if _cancel_code(exc.__cause__, pos * ITEMS_PER_TASK + _IDEM_ITEM)
                    == "ConditionalCheckFailed"
                ]
                if not taken:
                    raise
                for i, record in taken:
                    n = new[i]
                    try:
                        replay = self._replay(
                            n.tenant, n.idempotency_key, n.request_hash, record, at, remaining
                        )
                    except IdempotencyMismatch as mismatch:
                        results[i] = mismatch
                        continue
                    if replay is not None:
                        results[i] = SubmitResult(replay, created=False)
                    # else: the record expired meanwhile: the next round commits it
                continue
            results.update({i: SubmitResult(built[i][0], created=True) for i in left})
        return [results[i] for i in range(len(new))]

    def _new_items(self, n: NewTask, at: int) -> tuple[Task, list[dict[str, Any]]]:
        """A new task of `n` and its transaction items: task item, idempotency record, PAYLOAD
        item (ITEMS_PER_TASK, the record at _IDEM_ITEM)."""
        task_id = uuid.uuid4().hex
        submitted = TaskEvent(
            seq=1,
            from_state=None,
            to_state=TaskState.PENDING,
            at_ms=at,
            attempt=0,
            detail="submitted" if n.not_before_ms <= at else "submitted, delayed",
        )
        task = Task(
            task_id=task_id,
            tenant=n.tenant,
            task_type=n.task_type,
            payload=n.payload,
            state=TaskState.PENDING,
            version=1,
            attempts=0,
            max_attempts=n.max_attempts,
            created_at_ms=at,
            updated_at_ms=at,
            idempotency_key=n.idempotency_key,
            event_seq=1,
            traceparent=n.traceparent,
            not_before_ms=n.not_before_ms,
            start_by_ms=n.start_by_ms,
            lane=n.lane,
            events=(submitted,),
        )
        mark = (
            self.due_mark(task_id, n.not_before_ms)
            if n.not_before_ms > at
            else self.outbox_mark(task_id, at)
        )
        task_values = {
            schema.PK: schema.task_pk(task_id),
            schema.SK: schema.TASK_SK,
            **codec.item_values(task, codec.TASK),
            schema.GSI_BY_TENANT_PK: schema.tenant_pk(n.tenant),
            schema.GSI_BY_TENANT_SK: f"{at:013d}#{task_id}",
            **mark,
            # A delayed task waits to start from its due time.
            **self.queued_mark(n.tenant, max(at, n.not_before_ms)),
        }
        payload_values = {
            schema.PK: schema.task_pk(task_id),
            schema.SK: schema.PAYLOAD_SK,
            **codec.item_values(task, codec.PAYLOAD),
        }
        idem_values = {
            schema.PK: schema.idempotency_pk(n.tenant, n.idempotency_key),
            schema.SK: schema.IDEM_SK,
            schema.IDEM_TASK_ID: task_id,
            schema.IDEM_REQUEST_HASH: n.request_hash,
            schema.TTL_ATTRIBUTE: at // 1000 + self._settings.idempotency_ttl_seconds,
        }
        items = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": _item(task_values),
                    "ConditionExpression": "attribute_not_exists(#pk)",
                    "ExpressionAttributeNames": {"#pk": schema.PK},
                }
            },
            {
                "Put": {
                    "TableName": self.table,
                    "Item": _item(idem_values),
                    # An expired record may be replaced before DynamoDB's TTL sweep removes it.
                    "ConditionExpression": "attribute_not_exists(#pk) OR #exp < :now",
                    "ExpressionAttributeNames": {"#pk": schema.PK, "#exp": schema.TTL_ATTRIBUTE},
                    "ExpressionAttributeValues": _item({":now": at // 1000}),
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
            # A fresh task id: the task item's condition already guards the pair.
            {"Put": {"TableName": self.table, "Item": _item(payload_values)}},
        ]
        return task, items

    def replayed(
        self, tenant: str, key: str, request_hash: str, remaining: float | None = None
    ) -> Task | None:
        """The task a live record for (tenant, key) made from the same request, read now;
        None if there is none (or it came from another request)."""
        try:
            return self._replay(tenant, key, request_hash, None, now_ms(), remaining)
        except IdempotencyMismatch:
            return None

    def _replay(
        self,
        tenant: str,
        key: str,
        request_hash: str,
        record_item: Mapping[str, Any] | None,
        at_ms: int,
        remaining: float | None,
    ) -> Task | None:
        """The task a live record for (tenant, key) points at; IdempotencyMismatch if it was
        made by another request; None if there is no live record. `record_item` is the record
        as the failed condition returned it; without one (a TransactionConflict, or a backend
        that does not return it) it is read, strongly consistent. Live means as the submit's
        condition judged it, at `at_ms`: judged by a later clock, a record expiring meanwhile
        would be neither replayed nor ever replaced by the same, unchanged, condition."""
        if record_item is None:
            resp = self._call(
                "get_item",
                remaining,
                TableName=self.table,
                Key=_item(
                    {schema.PK: schema.idempotency_pk(tenant, key), schema.SK: schema.IDEM_SK}
                ),
                ConsistentRead=True,
            )
            record_item = resp.get("Item")
        if record_item is None:
            return None
        record = _plain(record_item)
        if int(record[schema.TTL_ATTRIBUTE]) < at_ms // 1000:
            return None
        if record[schema.IDEM_REQUEST_HASH] != request_hash:
            raise IdempotencyMismatch(key, record[schema.IDEM_TASK_ID])
        return self.get(record[schema.IDEM_TASK_ID], remaining=remaining)

    # ---- transitions ----
    def transition(
        self,
        task: Task,
        to: TaskState,
        *,
        detail: str = "",
        set_values: Mapping[str, Any] | None = None,
        remove: tuple[str, ...] = (),
        lease_owner: str | None = None,
        via: TaskState | None = None,
        no_effects: bool = False,
        remaining: float | None = None,
    ) -> Task:
        """Move `task` (as last read) to `to`, appending its event(s) to the history in the same
        conditional UpdateItem.

        `lease_owner` adds the condition that the caller still holds the lease; `no_effects`
        the condition that its handler has recorded no effect (record_effect does not change
        the version, so this is what makes a cancel see an effect recorded meanwhile).
        `via` records an intermediate state that happened but was never written (a worker that
        receives a task still PENDING records QUEUED then RUNNING, so the history keeps the
        canonical path).
        Raises Conflict if the task changed since it was read, IllegalTransition if the state
        machine forbids the move.
        """
        path = [task.state, *([via] if via else []), to]
        for current, target in itertools.pairwise(path):
            check_transition(task.task_id, current, target)
        at = now_ms()
        attempt = int((set_values or {}).get(_ATTEMPTS, task.attempts))
        steps = list(itertools.pairwise(path))
        events = tuple(
            # A `via` step happened before this write (a message on the queue); the detail
            # describes the step being written, so it goes on the last event only.
            TaskEvent(
                seq=task.event_seq + i + 1,
                from_state=a,
                to_state=b,
                at_ms=at,
                attempt=attempt,
                detail=(detail if i == len(steps) - 1 else VIA_DETAIL)[:MAX_EVENT_DETAIL_CHARS],
            )
            for i, (a, b) in enumerate(steps)
        )
        values: dict[str, Any] = {
            _STATE: to.value,
            _VERSION: task.version + 1,
            _SEQ: task.event_seq + len(events),
            _UPDATED: at,
            **(set_values or {}),
        }
        to_remove = list(remove)
        if task.state == TaskState.PENDING:
            to_remove.extend(OUTBOX_ATTRIBUTES)
        if to.terminal or to == TaskState.RUNNING:
            to_remove.extend(QUEUED_ATTRIBUTES)  # started (a retry waiting does not count)
        elif task.state.terminal:  # a redrive: waiting again, since now
            values.update(self.queued_mark(task.tenant, at))
        names = {f"#s{i}": k for i, k in enumerate(values)}
        expr_values: dict[str, Any] = {f":s{i}": v for i, v in enumerate(values.values())}
        sets = [f"#s{i} = :s{i}" for i in range(len(values))]
        names["#h"] = _HISTORY
        kept = _kept_history(task, events)
        if kept is None:
            expr_values[":events"] = [codec.event_value(e) for e in events]
            expr_values[":none"] = []
            sets.append("#h = list_append(if_not_exists(#h, :none), :events)")
        else:
            expr_values[":events"] = [codec.event_value(e) for e in kept]
            sets.append("#h = :events")
        update = "SET " + ", ".join(sets)
        if to_remove:
            names.update({f"#r{i}": k for i, k in enumerate(to_remove)})
            update += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(to_remove)))
        # The event_seq condition keeps the history's numbering: a task read without it (a
        # listing's index entry) fails here instead of appending events with reused numbers.
        names.update({"#state": _STATE, "#version": _VERSION, "#seq": _SEQ})
        expr_values.update(
            {":from": task.state.value, ":version": task.version, ":seq": task.event_seq}
        )
        condition = "#state = :from AND #version = :version AND #seq = :seq"
        if lease_owner is not None:
            names["#owner"] = LEASE_ATTRIBUTES[0]
            expr_values[":owner"] = lease_owner
            condition += " AND #owner = :owner"
        if no_effects:
            names["#effects"] = _EFFECTS
            condition += " AND attribute_not_exists(#effects)"
        try:
            self._call(
                "update_item",
                remaining,
                TableName=self.table,
                Key=_task_key(task.task_id),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=_item(expr_values),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) == "TransactionConflictException":
                # A transaction (an effect being recorded) held the item: decide on a re-read.
                raise Conflict(f"task {task.task_id}: a transaction held it") from exc
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            # botocore retries a write whose response was lost; the retry then meets its own
            # first try. The events it appended (same times, numbers and details) say so.
            found = exc.response.get("Item")
            stored = task_from_item(found) if found else self.get(task.task_id)
            ours = _applied(task, values, to_remove, events)
            if (
                stored is None
                or stored.events[-len(events) :] != events
                # Another writer from the same version, in the same millisecond, with the
                # same detail appends the same events: what it set (a lease owner) tells.
                or any(getattr(stored, f) != getattr(ours, f) for f in _TRANSITION_FIELDS)
            ):
                raise Conflict(f"task {task.task_id} changed since version {task.version}") from exc
        # The write succeeded against exactly `task`, so the new item is known without a read.
        return _applied(task, values, to_remove, events)

    def cancel(self, task: Task, reason: str, remaining: float | None = None) -> Task:
        """CANCELLED, unless its handler has recorded an effect (EffectsApplied): an effect and
        a cancel are ordered by DynamoDB on the task item, so once CancelTask answers CANCELLED
        no effect was, or will be, recorded. Conflict if the task changed since it was read."""
        if task.effects_applied:
            raise EffectsApplied(task.task_id, task.effects_applied)
        return self.transition(
            task,
            TaskState.CANCELLED,
            detail=reason,
            remove=LEASE_ATTRIBUTES,
            no_effects=True,
            remaining=remaining,
        )

    def extend_lease(
        self, task_id: str, owner: str, until_ms: int, remaining: float | None = None
    ) -> bool:
        """Push the lease out; False if the task is no longer RUNNING under this owner."""
        return self._write_if(
            "update_item",
            remaining,
            TableName=self.table,
            Key=_task_key(task_id),
            UpdateExpression="SET #until = :until",
            ConditionExpression="#state = :running AND #owner = :owner",
            ExpressionAttributeNames={
                "#state": _STATE,
                "#owner": LEASE_ATTRIBUTES[0],
                "#until": LEASE_ATTRIBUTES[1],
            },
            ExpressionAttributeValues=_item(
                {":until": until_ms, ":running": TaskState.RUNNING.value, ":owner": owner}
            ),
        )

    # ---- outbox ----
    def outbox_marks(self, older_than_ms: int, limit: int) -> list[OutboxMark]:
        """Pending outbox marks set before `older_than_ms`, oldest first, across all shards."""
        return self._marks(schema.outbox_pk, limit, older_than_ms)

    def due_marks(self, limit: int) -> list[OutboxMark]:
        """Delayed tasks' marks, earliest due first, up to `limit` from each shard (every mark
        the shards' queries read): those due by now, and after them the next ones to come (so
        the relay knows when to look again). Fewer than `limit` are due only if no more were:
        a shard with more due behind its page returned `limit` due marks itself."""
        return self._marks(schema.due_pk, limit, per_shard=True)

    def _marks(
        self,
        partition: Callable[[int], str],
        limit: int,
        before_ms: int | None = None,
        *,
        per_shard: bool = False,
    ) -> list[OutboxMark]:
        marks: list[OutboxMark] = []
        for shard in range(self._settings.outbox_shards):
            condition = "#p = :p"
            names = {"#p": schema.GSI_OUTBOX_PK}
            values: dict[str, Any] = {":p": partition(shard)}
            if before_ms is not None:
                condition += " AND #at < :before"
                names["#at"] = schema.GSI_OUTBOX_SK
                values[":before"] = before_ms
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": schema.GSI_OUTBOX,
                "KeyConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": _item(values),
                "Limit": limit,
            }
            resp = self._call("query", **kwargs)
            for raw in resp.get("Items", []):
                v = _plain(raw)
                marks.append(
                    OutboxMark(
                        v[codec.attr("task_id")],
                        v[codec.attr("task_type")],
                        int(v[schema.GSI_OUTBOX_SK]),
                    )
                )
        marks.sort(key=lambda m: m.marked_at_ms)
        return marks if per_shard else marks[:limit]

    # ---- a tenant's tasks waiting to start ----
    def oldest_queued_ms(self, tenant: str, remaining: float | None = None) -> int | None:
        """When the tenant's oldest task still waiting to start was submitted (or redriven);
        None if it has none. One key read of the queued index."""
        resp = self._call(
            "query",
            remaining,
            TableName=self.table,
            IndexName=schema.GSI_QUEUED,
            KeyConditionExpression="#p = :p",
            ExpressionAttributeNames={"#p": schema.GSI_QUEUED_PK},
            ExpressionAttributeValues=_item({":p": schema.tenant_pk(tenant)}),
            ProjectionExpression=schema.GSI_QUEUED_SK,
            Limit=1,
        )
        items = resp.get("Items", [])
        return int(_plain(items[0])[schema.GSI_QUEUED_SK]) if items else None

    def queued_count(self, tenant: str, limit: int, remaining: float | None = None) -> int:
        """How many of the tenant's tasks wait to start, counted up to `limit` (reads as many
        index keys as it counts, about 0.5 RCU per 80 keys, and no more than `limit`)."""
        counted = 0
        start: dict[str, Any] | None = None
        while counted < limit:
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": schema.GSI_QUEUED,
                "KeyConditionExpression": "#p = :p",
                "ExpressionAttributeNames": {"#p": schema.GSI_QUEUED_PK},
                "ExpressionAttributeValues": _item({":p": schema.tenant_pk(tenant)}),
                "Select": "COUNT",
                "Limit": limit - counted,
            }
            if start:
                kwargs["ExclusiveStartKey"] = start
            resp = self._call("query", remaining, **kwargs)
            counted += int(resp.get("Count", 0))
            start = resp.get("LastEvaluatedKey")
            if not start:
                break
        return counted

    # ---- handler effect ledger ----
    def record_effect(self, task_id: str, effect: str, owner: str) -> bool:
        """Record a handler's effect `effect` exactly once per task, fenced by the lease
        (`owner`: the run's lease token, unique per claim, so no two runs share it).

        One transaction: an update of the task item conditional on it being RUNNING under
        `owner` (the fence; it also counts the effect, which is what CancelTask checks), and the
        conditional Put of the ledger item keyed by (task id, effect name), which stores
        `owner`. True: `owner` recorded it, now or in an earlier try whose answer was lost.
        False: an earlier run recorded it. LeaseLost: the fence failed, nothing written.

        A lost response is handled twice over: the ClientRequestToken is derived from (task,
        effect, owner), so DynamoDB treats botocore's retry as the same transaction for 10
        minutes; and when a retry does run again (the window passed, or a backend without
        tokens) and finds the ledger item, the owner stored in it tells whose it is.
        """
        if not EFFECT_NAME_RE.match(effect):
            raise ValueError(f"effect name {effect!r} must match {EFFECT_NAME_RE.pattern}")
        ledger_key = _item({schema.PK: schema.effect_pk(task_id), schema.SK: effect})
        items = [
            {
                "Update": {
                    "TableName": self.table,
                    "Key": _task_key(task_id),
                    "UpdateExpression": "SET #effects = if_not_exists(#effects, :zero) + :one",
                    "ConditionExpression": "#state = :running AND #owner = :owner",
                    "ExpressionAttributeNames": {
                        "#effects": _EFFECTS,
                        "#state": _STATE,
                        "#owner": LEASE_ATTRIBUTES[0],
                    },
                    "ExpressionAttributeValues": _item(
                        {
                            ":zero": 0,
                            ":one": 1,
                            ":owner": owner,
                            ":running": TaskState.RUNNING.value,
                        }
                    ),
                }
            },
            {
                "Put": {
                    "TableName": self.table,
                    "Item": {
                        **ledger_key,
                        **_item(
                            {
                                schema.EFFECT_TASK_ID: task_id,
                                schema.EFFECT_OWNER: owner,
                                schema.EFFECT_AT: now_ms(),
                            }
                        ),
                    },
                    "ConditionExpression": "attribute_not_exists(#pk)",
                    "ExpressionAttributeNames": {"#pk": schema.PK},
                }
            },
        ]
        token = str(uuid.uuid5(_EFFECT_TOKENS, f"{task_id}\0{effect}\0{owner}"))
        for _ in range(5):
            try:
                self._call("transact_write_items", TransactItems=items, ClientRequestToken=token)
                return True
            except ClientError as exc:
                if error_code(exc) == "IdempotentParameterMismatchException":
                    # This attempt called before with the same name (a new timestamp): decide
                    # by what is recorded.
                    return self._recorded_by(ledger_key, owner, fenced=False)
                fence, ledger = _reasons(exc)
                if ledger == "ConditionalCheckFailed":
                    return self._recorded_by(ledger_key, owner, fenced=fence is not None)
                if fence == "ConditionalCheckFailed":
                    raise LeaseLost(f"task {task_id} is not RUNNING under {owner}") from exc
                if "TransactionConflict" not in (fence, ledger):
                    raise
                # A heartbeat was updating the task item at that moment: try again.
        raise Conflict(f"task {task_id}: effect {effect!r} kept conflicting")

    def _recorded_by(self, ledger_key: dict[str, Any], owner: str, *, fenced: bool) -> bool:
        resp = self._call("get_item", TableName=self.table, Key=ledger_key, ConsistentRead=True)
        if "Item" not in resp:
            raise Conflict("the effect ledger item vanished")
        if _plain(resp["Item"]).get(schema.EFFECT_OWNER) == owner:
            return True
        if fenced:
            raise LeaseLost("the effect was recorded by an earlier attempt and the lease is gone")
        return False


# Pauses before re-asking for the keys a BatchGetItem left unprocessed (AWS: back off).
_UNPROCESSED_BACKOFF = (0.05, 0.1, 0.2, 0.4, 0.8, 0.0)

_EFFECT_TOKENS = uuid.UUID("5b0c7d3e-8f51-4c0e-9a57-0b8a3f6c2e11")


def _reasons(exc: ClientError) -> tuple[str | None, str | None]:
    """(task fence, ledger Put) cancellation codes of record_effect's transaction."""
    if error_code(exc) != "TransactionCanceledException":
        return None, None
    codes = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
    codes = [None if c in (None, "None") else str(c) for c in codes] + [None, None]
    return codes[0], codes[1]
