"""The raw-call floor: the fewest AWS calls any queue-backed task service with Conveyor's
guarantees must make per task, made directly with boto3 at a given concurrency.

Per task (issue 9): one 2-item TransactWriteItems to submit (the task with its payload and the
idempotency record, both conditional), one SendMessage; ReceiveMessage and DeleteMessageBatch
in batches of 10; one conditional claim (UpdateItem) and one conditional completion. No
history, no outbox, no leases, no heartbeats, no retries: a ceiling Conveyor can approach,
not a design to copy.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from conveyor_dev.emulators.backend import EMULATOR_CREDENTIALS


@dataclass(frozen=True)
class FloorResult:
    tasks: int
    seconds: float
    requests: dict[str, int]

    @property
    def tasks_per_second(self) -> float:
        return self.tasks / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "seconds": self.seconds,
            "tasks_per_second": self.tasks_per_second,
            "requests_per_task": {k: v / self.tasks for k, v in sorted(self.requests.items())},
            "requests_per_task_total": sum(self.requests.values()) / self.tasks,
        }


class _Counted:
    """boto3 clients whose every call is counted by operation (the floor's own counting)."""

    def __init__(self, endpoint: str, dynamodb_endpoint: str, region: str) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        session = boto3.session.Session(
            region_name=region,
            aws_access_key_id=EMULATOR_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=EMULATOR_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        config = Config(max_pool_connections=64, retries={"mode": "standard"})
        self.ddb = session.client("dynamodb", endpoint_url=dynamodb_endpoint, config=config)
        self.sqs = session.client("sqs", endpoint_url=endpoint, config=config)
        for client in (self.ddb, self.sqs):
            client.meta.events.register("before-call", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.counts[model.name] += 1


def run_floor(
    *,
    endpoint: str,
    dynamodb_endpoint: str,
    region: str,
    table: str,
    queue_url: str,
    tasks: int,
    clients: int,
    consumers: int,
    payload: bytes,
) -> FloorResult:
    aws = _Counted(endpoint, dynamodb_endpoint, region)
    done = threading.Semaphore(0)
    stop = threading.Event()

    def submit(i: int) -> None:
        task_id = uuid.uuid4().hex
        now = str(int(time.time()))
        aws.ddb.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": table,
                        "Item": {
                            "pk": {"S": f"TASK#{task_id}"},
                            "sk": {"S": "TASK"},
                            "state": {"S": "PENDING"},
                            "payload": {"B": payload},
                            "created_at": {"N": now},
                        },
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": table,
                        "Item": {
                            "pk": {"S": f"IDEM#floor#{task_id}"},
                            "sk": {"S": "IDEM"},
                            "task_id": {"S": task_id},
                        },
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )
        aws.sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=task_id,
            MessageGroupId=f"floor#{i % 32}",
            MessageDeduplicationId=task_id,
        )

    def move(task_id: str, frm: str, to: str) -> None:
        aws.ddb.update_item(
            TableName=table,
            Key={"pk": {"S": f"TASK#{task_id}"}, "sk": {"S": "TASK"}},
            UpdateExpression="SET #s = :to",
            ConditionExpression="#s = :from",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":to": {"S": to}, ":from": {"S": frm}},
        )

    def consume() -> None:
        while not stop.is_set():
            batch = aws.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            for message in batch:
                move(message["Body"], "PENDING", "RUNNING")
                move(message["Body"], "RUNNING", "SUCCEEDED")
            if batch:
                aws.sqs.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                        for n, m in enumerate(batch)
                    ],
                )
                for _ in batch:
                    done.release()

    started = time.perf_counter()
    with ThreadPoolExecutor(consumers) as consumer_pool:
        for _ in range(consumers):
            consumer_pool.submit(consume)
        with ThreadPoolExecutor(clients) as submitters:
            list(submitters.map(submit, range(tasks)))
        for _ in range(tasks):
            if not done.acquire(timeout=120):
                stop.set()
                raise TimeoutError("the floor's consumers stopped finishing tasks")
        elapsed = time.perf_counter() - started
        stop.set()
    # The consumers' last empty polls are idle time, not per-task work.
    requests = dict(aws.counts)
    return FloorResult(tasks, elapsed, requests)
