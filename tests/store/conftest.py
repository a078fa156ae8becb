"""The store tier: TaskStore, AwsClients, the circuit breaker and the operator actions against
the session's AWS backend (tests/conftest.py's `aws_backend`).

Isolation. `provision(..., "dev")` runs once per session and creates the table and the queues
exactly as the Pulumi program declares them; no test writes to those. Each test instead gets a
fresh table and fresh FIFO queues *cloned from the provisioned ones* (key schema, attribute
definitions, GSIs with their projections, TTL attribute; the queues' attributes with the
redrive policy re-pointed at the fresh DLQ), so the shapes under test are still the declared
ones. Fresh resources cost a few milliseconds in moto and make exact assertions possible (item
counts, "nothing was written", an empty DLQ); clearing items between tests instead would need a
scan-and-delete per test and would leave queue state behind (in-flight messages, dedup ids).

AWS credentials: the in-process clients read them from the environment, so each test gets the
backend's (fake) credentials via monkeypatch, and no CONVEYOR_* variable of the caller leaks in.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conveyor.aws import AwsClients, make_breaker
from conveyor.domain import LANES, lane_suffix
from conveyor.ops import Ops, OpsSettings
from conveyor.queue import TaskQueue
from conveyor.settings import AwsSettings
from conveyor.store import TaskStore
from conveyor_dev.emulators.backend import Backend
from conveyor_dev.emulators.provision import ProvisionedResources
from store_support import Raw, Resources

# Queue attributes copied from the provisioned queues (QueueArn, counts and timestamps are not).
QUEUE_ATTRIBUTES = (
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "DelaySeconds",
    "MaximumMessageSize",
    "ReceiveMessageWaitTimeSeconds",
    "SqsManagedSseEnabled",
)


@pytest.fixture(scope="session")
def provisioned(aws_backend: Backend) -> ProvisionedResources:
    return aws_backend.provision("dev")


@pytest.fixture(scope="session")
def table_shape(aws_backend: Backend, provisioned: ProvisionedResources) -> dict[str, Any]:
    """create_table arguments (minus the name) equal to the provisioned table, plus its TTL."""
    ddb = aws_backend.client("dynamodb")
    table = ddb.describe_table(TableName=provisioned.table_name)["Table"]
    ttl = ddb.describe_time_to_live(TableName=provisioned.table_name)["TimeToLiveDescription"]
    shape: dict[str, Any] = {
        "KeySchema": table["KeySchema"],
        "AttributeDefinitions": table["AttributeDefinitions"],
        "BillingMode": table.get("BillingModeSummary", {}).get("BillingMode", "PAY_PER_REQUEST"),
        "GlobalSecondaryIndexes": [
            {
                "IndexName": i["IndexName"],
                "KeySchema": i["KeySchema"],
                "Projection": i["Projection"],
            }
            for i in table.get("GlobalSecondaryIndexes", [])
        ],
    }
    assert ttl.get("AttributeName"), "the declared table has a TTL attribute"
    return {"create": shape, "ttl_attribute": ttl["AttributeName"]}


@pytest.fixture(scope="session")
def queue_shape(aws_backend: Backend, provisioned: ProvisionedResources) -> dict[str, Any]:
    sqs = aws_backend.client("sqs")

    def attributes(url: str) -> dict[str, str]:
        got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return {k: v for k, v in got.items() if k in QUEUE_ATTRIBUTES}

    main = attributes(provisioned.queue_url)
    redrive = json.loads(
        sqs.get_queue_attributes(QueueUrl=provisioned.queue_url, AttributeNames=["RedrivePolicy"])[
            "Attributes"
        ]["RedrivePolicy"]
    )
    return {"main": main, "dlq": attributes(provisioned.dlq_url), "redrive": redrive}


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch, aws_backend: Backend) -> None:
    for name in list(os.environ):
        if name.upper().startswith("CONVEYOR_") or name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
            monkeypatch.delenv(name)
    for name, value in aws_backend.env().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def resources(
    raw_clients: tuple[Any, Any], table_shape: dict[str, Any], queue_shape: dict[str, Any]
) -> Iterator[Resources]:
    ddb, sqs = raw_clients
    suffix = uuid.uuid4().hex[:12]
    table = f"store-test-{suffix}"
    ddb.create_table(TableName=table, **table_shape["create"])
    ddb.get_waiter("table_exists").wait(
        TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    ddb.update_time_to_live(
        TableName=table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": table_shape["ttl_attribute"]},
    )
    lane_urls = {}
    for lane in LANES:  # a queue and DLQ per lane, as the program declares them
        name = f"store-{suffix}{lane_suffix(lane, '-')}"
        dlq_url = sqs.create_queue(QueueName=f"{name}-dlq.fifo", Attributes=queue_shape["dlq"])[
            "QueueUrl"
        ]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        redrive = {**queue_shape["redrive"], "deadLetterTargetArn": dlq_arn}
        queue_url = sqs.create_queue(
            QueueName=f"{name}.fifo",
            Attributes={**queue_shape["main"], "RedrivePolicy": json.dumps(redrive)},
        )["QueueUrl"]
        lane_urls[lane] = (queue_url, dlq_url)
    try:
        yield Resources(table, lane_urls)
    finally:
        ddb.delete_table(TableName=table)
        for urls in lane_urls.values():
            for url in urls:
                sqs.delete_queue(QueueUrl=url)


@pytest.fixture(scope="session")
def clients(aws_backend: Backend) -> AwsClients:
    """One client cache for the tier (clients are not bound to a table or queue); its
    credentials are resolved on first use, inside a test, from `aws_credentials`."""
    return AwsClients(
        AwsSettings(**aws_backend.env())  # type: ignore[arg-type]
    )


@pytest.fixture
def settings(aws_backend: Backend, resources: Resources, aws_credentials: None) -> OpsSettings:
    return OpsSettings(  # type: ignore[call-arg]
        **aws_backend.env(),
        table_name=resources.table,
        **resources.url_settings(),
    )


@pytest.fixture
def store(clients: AwsClients, settings: OpsSettings) -> TaskStore:
    """Wired as conveyor.wiring.build wires it, on the tier's shared client cache."""
    return TaskStore(clients, settings, make_breaker(settings, "dynamodb"))


@pytest.fixture
def queue(clients: AwsClients, settings: OpsSettings) -> TaskQueue:
    return TaskQueue(clients, settings)


@pytest.fixture
def ops(store: TaskStore, queue: TaskQueue) -> Ops:
    return Ops(store, queue)


@pytest.fixture(scope="session")
def raw_clients(aws_backend: Backend) -> tuple[Any, Any]:
    return aws_backend.client("dynamodb"), aws_backend.client("sqs")


@pytest.fixture
def raw(raw_clients: tuple[Any, Any], resources: Resources) -> Raw:
    return Raw(*raw_clients, resources)
