"""Helpers for the store tier: raw reads that bypass the code under test, metric deltas from
prometheus_client's REGISTRY, and short ways to put a task into a given state."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from conveyor.domain import DEFAULT_LANE, Task, TaskState
from conveyor.relay import Relay
from conveyor.settings import RelaySettings, lane_url_fields
from conveyor.store import TaskStore, now_ms
from conveyor_dev.emulators.provision import LaneUrls
from prometheus_client import REGISTRY

_deser = TypeDeserializer()
TENANT = "acme"


@dataclass(frozen=True)
class Resources(LaneUrls):
    table: str
    lane_urls: dict[str, tuple[str, str]]  # lane -> (queue URL, DLQ URL)

    def url_settings(self) -> dict[str, str]:
        """The QueueSettings fields of every lane's URLs."""
        return {
            field: url
            for lane, urls in self.lane_urls.items()
            for field, url in zip(lane_url_fields(lane), urls, strict=True)
        }


def plain(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _deser.deserialize(v) for k, v in item.items()}


@dataclass(frozen=True)
class Raw:
    """Direct boto3 access to the test's table and queues."""

    ddb: Any
    sqs: Any
    res: Resources

    def items(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.res.table, "ConsistentRead": True}
        while True:
            page = self.ddb.scan(**kwargs)
            out.extend(plain(i) for i in page["Items"])
            if "LastEvaluatedKey" not in page:
                return sorted(out, key=lambda i: (i["pk"], i["sk"]))
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def item(self, pk: str, sk: str) -> dict[str, Any] | None:
        got = self.ddb.get_item(
            TableName=self.res.table,
            Key={"pk": {"S": pk}, "sk": {"S": sk}},
            ConsistentRead=True,
        )
        return plain(got["Item"]) if "Item" in got else None

    def task_item(self, task_id: str) -> dict[str, Any] | None:
        return self.item(f"TASK#{task_id}", "TASK")

    def update(self, pk: str, sk: str, expression: str, values: dict[str, Any]) -> None:
        self.ddb.update_item(
            TableName=self.res.table,
            Key={"pk": {"S": pk}, "sk": {"S": sk}},
            UpdateExpression=expression,
            ExpressionAttributeValues=values,
        )

    def receive(self, url: str, *, visibility: int = 0, **extra: Any) -> list[dict[str, Any]]:
        """Every message visible in `url` right now (no long poll)."""
        got = self.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=visibility,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
            **extra,
        )
        return list(got.get("Messages", []))

    def bodies(self, url: str) -> list[dict[str, Any]]:
        return [json.loads(m["Body"]) for m in self.receive(url)]

    def depth(self, url: str) -> tuple[int, int]:
        """(visible, in flight) message counts. Counting by attributes, not by receiving: moto
        withholds a FIFO group while an earlier receive of it is still on its books, even after
        its visibility was reset to 0, so a receive may not return every visible message."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )["Attributes"]
        return (
            int(attrs["ApproximateNumberOfMessages"]),
            int(attrs["ApproximateNumberOfMessagesNotVisible"]),
        )


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def ddb_calls(operation: str, outcome: str = "success") -> float:
    return metric(
        "conveyor_aws_requests_total", service="dynamodb", operation=operation, outcome=outcome
    )


def next_ms(after: int) -> int:
    """Busy-wait (bounded) until the millisecond clock has moved past `after`."""
    deadline = time.monotonic() + 1.0
    while (now := now_ms()) <= after:
        assert time.monotonic() < deadline, "the clock did not move"
    return now


def submit(
    store: TaskStore,
    *,
    tenant: str = TENANT,
    task_type: str = "demo.sleep",
    payload: bytes = b"{}",
    key: str | None = None,
    request_hash: str = "h1",
    max_attempts: int = 3,
    traceparent: str = "",
    lane: str = DEFAULT_LANE,
) -> Task:
    result = store.submit(
        tenant=tenant,
        task_type=task_type,
        payload=payload,
        idempotency_key=key or uuid.uuid4().hex,
        request_hash=request_hash,
        max_attempts=max_attempts,
        traceparent=traceparent,
        lane=lane,
    )
    assert result.created
    return result.task


def claim(store: TaskStore, task: Task, owner: str = "w1/m1/1") -> Task:
    """QUEUED (or PENDING) -> RUNNING under a lease held by `owner`, as the worker does."""
    return store.transition(
        task,
        TaskState.RUNNING,
        via=TaskState.QUEUED if task.state == TaskState.PENDING else None,
        detail="claimed",
        set_values={
            "attempts": task.attempts + 1,
            "lease_owner": owner,
            "lease_expires_at": now_ms() + 30_000,
        },
    )


LEASE = ("lease_owner", "lease_expires_at")


def dead(store: TaskStore, task: Task, error: str = "boom") -> Task:
    running = claim(store, task)
    return store.transition(
        running,
        TaskState.DEAD,
        detail=f"attempts exhausted: {error}",
        set_values={"last_error": error},
        remove=LEASE,
    )


def succeeded(store: TaskStore, task: Task) -> Task:
    running = claim(store, task)
    return store.transition(
        running, TaskState.SUCCEEDED, set_values={"result": b"ok"}, remove=LEASE
    )


def relay_on(settings: Any, store: TaskStore, queue: Any, **overrides: Any) -> Relay:
    """A relay in this process on the test's table and queues (`overrides`: RelaySettings)."""
    values = {
        "AWS_REGION": settings.aws_region,
        "AWS_ENDPOINT_URL": settings.aws_endpoint_url,
        "AWS_ENDPOINT_URL_DYNAMODB": settings.aws_endpoint_url_dynamodb,
        "table_name": settings.table_name,
        **settings.lane_url_settings(),
        "metrics_listen": "127.0.0.1:0",
        **overrides,
    }
    return Relay(RelaySettings(**values), store, queue)  # type: ignore[arg-type]
