"""The SQS FIFO task queue and its DLQ.

MessageGroupId is `<tenant>#<task type>#<shard>` (`message_group`) with the shard taken from the
task id. Not the bare task type: FIFO holds back a whole group while one of its messages is in
flight or backing off, so a group per type would let one poison task stall every task of its
type. The tenant is in it so that one tenant's backlog never sits in the same group, in FIFO
order, ahead of another tenant's tasks: SQS skips every group with a message in flight, so
another tenant's task is delivered once the first tenant's groups of that type each have one
in flight (at most CONVEYOR_MESSAGE_GROUP_SHARDS groups per tenant and type; the conformance
case test_a_receive_skips_every_group_in_flight pins this). The order across groups is not
documented by AWS (only within a group): no receive order beyond that is relied on. The
trade-off is that ordering holds only within a shard, which Conveyor does not promise anyway
(tasks are independent); more shards give one tenant more parallelism per type, fewer shards
let other tenants in sooner.

Each priority lane (domain.LANES) has its own queue and DLQ: a queue is named by `QueueId`
(lane, kind), `main(lane)` and `dlq(lane)`. A task is sent to its lane's queue and dead-lettered
to its lane's DLQ; a received message remembers the queue it came from (`Message.queue`), where
every later call on its receipt handle goes.

The W3C trace context rides in message attributes (`traceparent`, `tracestate`) so the worker's
CONSUMER span joins the submitter's trace.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from opentelemetry import propagate

from conveyor.aws import AwsClients
from conveyor.domain import DEFAULT_LANE, LANES, Task
from conveyor.settings import QueueSettings
from conveyor.tasks import codec
from conveyor.telemetry import metrics

log = logging.getLogger("conveyor.queue")

# A queue's kind: a lane's task queue, or its dead-letter queue.
QUEUE_MAIN = "main"
QUEUE_DLQ = "dlq"
# The key under which `TaskQueue.receive` notes, in each raw message, the queue it came from.
_FROM = "conveyor.queue"


class QueueId(NamedTuple):
    """One of the queues: a lane's task queue (kind QUEUE_MAIN) or its DLQ (QUEUE_DLQ)."""

    lane: str
    kind: str

    def __str__(self) -> str:
        return self.kind if self.lane == DEFAULT_LANE else f"{self.lane}/{self.kind}"


def main(lane: str = DEFAULT_LANE) -> QueueId:
    return QueueId(lane, QUEUE_MAIN)


def dlq(lane: str = DEFAULT_LANE) -> QueueId:
    return QueueId(lane, QUEUE_DLQ)


def queue_of(raw: dict[str, Any]) -> QueueId:
    """The queue a raw message was received from (the default lane's task queue if unnoted)."""
    return raw.get(_FROM) or main()


DEAD_LETTER_QUEUES = tuple(dlq(lane) for lane in LANES)
_DEPTH_ATTRIBUTES = {
    "ApproximateNumberOfMessages": "visible",
    "ApproximateNumberOfMessagesNotVisible": "inflight",
    "ApproximateNumberOfMessagesDelayed": "delayed",
}
DEPTH_STATES = tuple(_DEPTH_ATTRIBUTES.values())  # the states `TaskQueue.depth` counts


@dataclass(frozen=True)
class Message:
    message_id: str
    receipt_handle: str
    task_id: str
    task_type: str
    receive_count: int
    attributes: dict[str, str] = field(default_factory=dict)
    error: str = ""
    group_id: str = ""
    # The task as it was committed when this message was sent (see `TaskQueue.send`), if the
    # sender included it.
    snapshot: Task | None = None
    # The queue it was received from: its receipt handle is valid there only.
    queue: QueueId = field(default_factory=main)


def _task_from_snapshot(value: Any, task_id: str) -> Task | None:
    """The snapshot's task, or None if it is missing or not one (the worker reads instead)."""
    try:
        task = codec.task_from_snapshot(value)
    except (KeyError, TypeError, ValueError):
        return None
    return task if task.task_id == task_id else None


def enqueue_dedup_id(task: Task) -> str:
    """The MessageDeduplicationId of the send that takes `task` out of PENDING.

    The task id for a new task (DESIGN.md §1); task id and version for a redriven one, whose
    first send may still be inside SQS's 5-minute deduplication window. Whoever sends (the API,
    an operator's redrive, the relay after either crashed) computes the same id, so duplicate
    sends collapse.
    """
    return task.task_id if task.version == 1 else f"{task.task_id}.v{task.version}"


# SQS's limit on a MessageGroupId.
MAX_GROUP_ID_CHARS = 128


def message_group(tenant: str, task_type: str, shard: int) -> str:
    """The message group of a tenant's tasks of a type in one shard. A tenant name too long to
    fit beside the type (both may be 60-odd characters) is replaced by a digest of it."""
    group = f"{tenant}#{task_type}#{shard}"
    if len(group) <= MAX_GROUP_ID_CHARS:
        return group
    return f"{hashlib.sha256(tenant.encode()).hexdigest()[:32]}#{task_type}#{shard}"


def dead_letter_group(task_id: str) -> str:
    """The DLQ message group of a dead task: one per task, so that in the FIFO DLQ no dead
    task's message holds back another's (FIFO hides a group's later messages while its first
    is being looked at)."""
    return f"dead#{task_id}"


class MalformedMessage(Exception):
    """A message whose body is not a Conveyor task reference."""


def parse(raw: dict[str, Any]) -> Message:
    try:
        body = json.loads(raw["Body"])
        task_id, task_type = str(body["task_id"]), str(body["task_type"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage(f"message {raw.get('MessageId')}: {exc}") from exc
    attrs = {
        name: value.get("StringValue", "")
        for name, value in raw.get("MessageAttributes", {}).items()
    }
    return Message(
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        task_id=task_id,
        task_type=task_type,
        receive_count=int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
        attributes=attrs,
        error=str(body.get("error", "")),
        group_id=raw.get("Attributes", {}).get("MessageGroupId", ""),
        snapshot=_task_from_snapshot(body["task"], task_id) if "task" in body else None,
        queue=queue_of(raw),
    )


class TaskQueue:
    def __init__(self, clients: AwsClients, settings: QueueSettings) -> None:
        self._clients = clients
        self._settings = settings
        self.urls: dict[QueueId, str] = {}
        for lane in LANES:
            self.urls[main(lane)], self.urls[dlq(lane)] = settings.lane_urls(lane)

    def _sqs(self, remaining: float | None = None) -> Any:
        return self._clients.client("sqs", remaining)

    def group_id(self, task_id: str, task_type: str, tenant: str) -> str:
        shard = int(task_id[-8:], 16) % self._settings.message_group_shards
        return message_group(tenant, task_type, shard)

    def send(
        self,
        task_id: str,
        task_type: str,
        *,
        tenant: str | None = None,
        lane: str = DEFAULT_LANE,
        queue: QueueId | None = None,
        dedup_id: str | None = None,
        group_id: str | None = None,
        error: str = "",
        traceparent: str = "",
        snapshot: Task | None = None,
        remaining: float | None = None,
    ) -> str:
        """Send a task reference to `queue`, by default its `lane`'s task queue; the dedup id
        defaults to the task id (DESIGN.md §1), the message group to the task's tenant group
        (`tenant` is then required).

        The trace context is the current one, or `traceparent` when given (the relay sends on
        behalf of a submit that happened in another process, possibly minutes ago). With
        `snapshot` the body carries the task as committed (codec.snapshot), payload included,
        so the worker's first claim needs no read: the claim is conditional on that version,
        so a task that changed since (cancelled, relayed, retried) fails the claim, and the
        worker reads it then.
        """
        if group_id is None:
            if tenant is None:
                raise TypeError("a send needs the task's tenant (for its message group)")
            group_id = self.group_id(task_id, task_type, tenant)
        entry = self._entry(
            task_id, task_type, group_id, dedup_id or task_id, error, traceparent, snapshot
        )
        resp = self._sqs(remaining).send_message(QueueUrl=self.urls[queue or main(lane)], **entry)
        return str(resp["MessageId"])

    def send_refs(self, tasks: Sequence[Task], remaining: float | None = None) -> set[str]:
        """Send the reference of each of `tasks` (at most 10) to its lane's task queue, one
        SendMessageBatch per lane among them, each as `send` would with its enqueue dedup id
        and its trace context. Returns the ids of the tasks whose message SQS refused (the rest
        were sent); raises when a request itself failed (then none of its lane's may have been
        sent, or any; those of lanes sent before were)."""
        refused: set[str] = set()
        for lane in LANES:
            refused |= self._send_lane_refs([t for t in tasks if t.lane == lane], lane, remaining)
        return refused

    def _send_lane_refs(
        self, tasks: Sequence[Task], lane: str, remaining: float | None
    ) -> set[str]:
        if not tasks:
            return set()
        entries = [
            {
                "Id": str(i),
                **self._entry(
                    t.task_id,
                    t.task_type,
                    self.group_id(t.task_id, t.task_type, t.tenant),
                    enqueue_dedup_id(t),
                    traceparent=t.traceparent,
                ),
            }
            for i, t in enumerate(tasks)
        ]
        resp = self._sqs(remaining).send_message_batch(
            QueueUrl=self.urls[main(lane)], Entries=entries
        )
        return {tasks[int(f["Id"])].task_id for f in resp.get("Failed", [])}

    @staticmethod
    def _entry(
        task_id: str,
        task_type: str,
        group_id: str,
        dedup_id: str,
        error: str = "",
        traceparent: str = "",
        snapshot: Task | None = None,
    ) -> dict[str, Any]:
        """A task reference's message (`send`'s arguments): body, group, dedup id and trace
        context (the current one, or `traceparent` when given)."""
        carrier: dict[str, str] = {"traceparent": traceparent} if traceparent else {}
        if not carrier:
            propagate.inject(carrier)
        body: dict[str, Any] = {"task_id": task_id, "task_type": task_type}
        if error:
            body["error"] = error[:1024]
        if snapshot is not None:
            body["task"] = codec.snapshot(snapshot)
        return {
            "MessageBody": json.dumps(body),
            "MessageGroupId": group_id,
            "MessageDeduplicationId": dedup_id,
            "MessageAttributes": {
                k: {"DataType": "String", "StringValue": v} for k, v in carrier.items()
            },
        }

    def dead_letter(self, task: Task, error: str) -> str:
        """Put `task`'s message in its lane's DLQ under a message group of its own (see
        `dead_letter_group`). The dedup id is per version: repeating this after a crash
        collapses, a task dead again after a redrive gets a new message."""
        return self.send(
            task.task_id,
            task.task_type,
            queue=dlq(task.lane),
            dedup_id=f"{task.task_id}.{task.version}",
            group_id=dead_letter_group(task.task_id),
            error=error,
        )

    def receive(
        self,
        max_messages: int,
        wait_seconds: int,
        visibility_timeout: int,
        *,
        queue: QueueId | None = None,
    ) -> list[dict[str, Any]]:
        """Raw messages of `queue` (default: the default lane's task queue), each noting that
        queue (`queue_of`); parse each with `parse`, so one bad body cannot sink a batch."""
        queue = queue or main()
        resp = self._sqs().receive_message(
            QueueUrl=self.urls[queue],
            MaxNumberOfMessages=max(1, min(max_messages, 10)),
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_timeout,
            MessageSystemAttributeNames=[
                "ApproximateReceiveCount",
                "SentTimestamp",
                "MessageGroupId",
            ],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = resp.get("Messages", [])
        for message in messages:
            message[_FROM] = queue
        if messages:
            metrics.sqs_messages_received_total.labels(queue.kind, queue.lane).inc(len(messages))
        return messages

    def peek(self, limit: int, *, queue: QueueId, hold_seconds: int = 30) -> list[dict[str, Any]]:
        """Up to `limit` distinct messages, each hidden for `hold_seconds` while the caller looks
        (receiving with visibility 0 would return the same first messages again and again).
        Give them back with `unhide`. FIFO: only the oldest message of each message group can
        be received while it is held, so a peek sees the head of every group (dead tasks have a
        group each, see `dead_letter_group`)."""
        seen: dict[str, dict[str, Any]] = {}
        while len(seen) < limit:
            batch = self.receive(min(10, limit - len(seen)), 0, hold_seconds, queue=queue)
            fresh = [m for m in batch if m["MessageId"] not in seen]
            if not fresh:
                break
            seen.update((m["MessageId"], m) for m in fresh)
        return list(seen.values())

    def unhide(self, raws: list[dict[str, Any]]) -> None:
        """Make each message visible again, each on its own: one that cannot be (a stale
        handle, a failed call) is logged and turns visible when its hold ends, and the rest
        are still unhidden."""
        for raw in raws:
            try:
                self.set_visibility(raw["ReceiptHandle"], 0, queue=queue_of(raw))
            except Exception:
                log.warning(
                    "could not unhide a message; it turns visible when its hold ends",
                    exc_info=True,
                    extra={"message_id": raw.get("MessageId")},
                )

    def set_visibility(
        self,
        receipt_handle: str,
        seconds: int,
        *,
        queue: QueueId | None = None,
        remaining: float | None = None,
    ) -> None:
        """Make a message of `queue` (default: the default lane's task queue) visible in
        `seconds`."""
        self._sqs(remaining).change_message_visibility(
            QueueUrl=self.urls[queue or main()],
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=seconds,
        )

    def delete(self, receipt_handle: str, *, queue: QueueId | None = None) -> None:
        self._sqs().delete_message(
            QueueUrl=self.urls[queue or main()], ReceiptHandle=receipt_handle
        )

    def delete_batch(self, receipt_handles: list[str], *, queue: QueueId | None = None) -> int:
        """One DeleteMessageBatch for up to 10 messages of one queue; returns how many SQS did
        not delete (they come back after their visibility timeout, and are deleted then)."""
        resp = self._sqs().delete_message_batch(
            QueueUrl=self.urls[queue or main()],
            Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(receipt_handles)],
        )
        return len(resp.get("Failed", []))

    def depth(self, queue: QueueId) -> dict[str, int]:
        """Approximate message counts of `queue` by state (visible, inflight, delayed)."""
        attrs = self._sqs().get_queue_attributes(
            QueueUrl=self.urls[queue], AttributeNames=list(_DEPTH_ATTRIBUTES)
        )["Attributes"]
        return {state: int(attrs.get(attr, 0)) for attr, state in _DEPTH_ATTRIBUTES.items()}

    def depths(self) -> dict[QueueId, dict[str, int]]:
        """Approximate message counts of every lane's queue and DLQ by state (visible,
        inflight, delayed)."""
        return {name: self.depth(name) for name in self.urls}


class DeleteBatcher:
    """Deletes settled messages in batches of up to 10 (DeleteMessageBatch): one request per
    batch instead of one per message.

    A message waits at most `linger` seconds for its batch, and not at all when the caller says
    nothing else is about to settle (`flush`), so a FIFO message group (whose next message SQS
    holds back until this one is deleted) is held only that much longer. Waiting
    is safe: the task's outcome is already recorded, the message stays invisible, and one
    whose delete never happens (the process died) comes back, finds its task terminal and is
    deleted then. `close` deletes what is left.
    """

    BATCH = 10

    def __init__(self, queue: TaskQueue, linger: float) -> None:
        self._queue = queue
        self._linger = linger
        self._pending: list[tuple[QueueId, str]] = []
        self._first_at = 0.0
        self._flush = False
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="deleter", daemon=True)
        self._thread.start()

    def add(
        self, receipt_handle: str, *, queue: QueueId | None = None, flush: bool = False
    ) -> None:
        """Queue a delete of a message of `queue` (default: the default lane's task queue);
        `flush` sends the batch now (the caller knows nothing else is about to settle, so
        waiting would only hold the message's group back)."""
        with self._wake:
            if not self._pending:
                self._first_at = time.monotonic()
            self._pending.append((queue or main(), receipt_handle))
            self._flush = self._flush or flush
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join()

    def _take(self) -> tuple[QueueId, list[str]] | None:
        """The next batch to delete (the oldest pending delete's queue, up to BATCH of its
        messages), once it is full or old enough; None when closed and empty."""
        with self._wake:
            while True:
                due = self._first_at + self._linger
                if self._pending and (
                    len(self._pending) >= self.BATCH
                    or self._closed
                    or self._flush
                    or time.monotonic() >= due
                ):
                    queue = self._pending[0][0]
                    mine = [i for i, (q, _) in enumerate(self._pending) if q == queue][: self.BATCH]
                    batch = [self._pending[i][1] for i in mine]
                    taken = set(mine)
                    self._pending = [p for i, p in enumerate(self._pending) if i not in taken]
                    self._first_at = time.monotonic()
                    self._flush = bool(self._pending) and self._flush
                    return queue, batch
                if self._closed:
                    return None
                self._wake.wait(max(0.0, due - time.monotonic()) if self._pending else None)

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            queue, batch = taken
            try:
                failed = self._queue.delete_batch(batch, queue=queue)
            except Exception:
                log.warning("could not delete settled messages; they come back", exc_info=True)
                continue
            if failed:
                log.warning("SQS did not delete %d settled message(s); they come back", failed)
