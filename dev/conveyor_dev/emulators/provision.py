"""Create in an AWS emulator (MiniStack, DynamoDB Local, LocalStack, moto) the queues, table
and secrets that the Pulumi program declares, with the same attributes: one source of truth
(DESIGN.md §8).

    from conveyor_dev.emulators.provision import provision
    resources = provision("http://127.0.0.1:5000", "eu-west-1", stack="dev")
    resources.queue_url, resources.dlq_url, resources.table_name, resources.secret_arns
    resources.lane_urls["high"], resources.queue_environment()

The program runs under Pulumi's mocks in a child process (`declared.declare`), so this module
imports neither Pulumi nor the program and can be used from any process. The data plane does not
depend on `conveyor:deployCompute`, so the run forces it off: no network, ECS or collector config
is needed. Every declared input is either mirrored or listed below as deliberately not mirrored;
an input this module does not know fails loudly instead of being dropped.

Not mirrored: secret values (pulumi-tls material exists only at `pulumi up`; the secrets are
created with PLACEHOLDER_SECRET_VALUE and local runs generate their own throwaway certificates),
the secrets' customer-managed KMS key (the emulator's default key encrypts them) and their
recovery window (it only applies on deletion).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError
from conveyor.domain import DEFAULT_LANE, LANES, lane_suffix
from conveyor.settings import queue_environment

from conveyor_dev.emulators.declared import Declaration, DeclaredResource, declare

QUEUE = "aws:sqs/queue:Queue"
TABLE = "aws:dynamodb/table:Table"
SECRET = "aws:secretsmanager/secret:Secret"

PLACEHOLDER_SECRET_VALUE = (
    "PLACEHOLDER: not a certificate. pulumi-tls material exists only in a deployed stack; "
    "local runs generate their own throwaway mTLS certificates."
)
DATA_PLANE_ONLY = {"conveyor:deployCompute": "false"}

# Pulumi input -> SQS queue attribute.
QUEUE_ATTRIBUTES = {
    "fifoQueue": "FifoQueue",
    "contentBasedDeduplication": "ContentBasedDeduplication",
    "deduplicationScope": "DeduplicationScope",
    "fifoThroughputLimit": "FifoThroughputLimit",
    "sqsManagedSseEnabled": "SqsManagedSseEnabled",
    "kmsMasterKeyId": "KmsMasterKeyId",
    "visibilityTimeoutSeconds": "VisibilityTimeout",
    "receiveWaitTimeSeconds": "ReceiveMessageWaitTimeSeconds",
    "messageRetentionSeconds": "MessageRetentionPeriod",
    "delaySeconds": "DelaySeconds",
    "maxMessageSize": "MaximumMessageSize",
    "redrivePolicy": "RedrivePolicy",
}
TABLE_INPUTS = frozenset(
    {
        "name",
        "billingMode",
        "hashKey",
        "rangeKey",
        "attributes",
        "globalSecondaryIndexes",
        "ttl",
        "pointInTimeRecovery",
        "serverSideEncryption",
        "deletionProtectionEnabled",
    }
)
SECRET_INPUTS = frozenset({"name", "description"})
SECRET_INPUTS_NOT_MIRRORED = frozenset({"kmsKeyId", "recoveryWindowInDays"})

log = logging.getLogger(__name__)


class EmulatorError(RuntimeError):
    """The emulator holds something that contradicts the declaration, or the declaration holds
    something this module cannot mirror."""


@dataclass(frozen=True)
class DataPlane:
    """The declared SQS queues, DynamoDB tables and Secrets Manager secrets, with their inputs."""

    stack: str
    queues: tuple[DeclaredResource, ...]
    tables: tuple[DeclaredResource, ...]
    secrets: tuple[DeclaredResource, ...]


class LaneUrls:
    """Each lane's (queue URL, DLQ URL), and the default lane's two by name."""

    lane_urls: dict[str, tuple[str, str]]  # lane -> (queue URL, DLQ URL)

    @property
    def queue_url(self) -> str:
        """The default lane's task queue."""
        return self.lane_urls[DEFAULT_LANE][0]

    @property
    def dlq_url(self) -> str:
        """The default lane's DLQ."""
        return self.lane_urls[DEFAULT_LANE][1]


@dataclass(frozen=True)
class ProvisionedResources(LaneUrls):
    table_name: str
    lane_urls: dict[str, tuple[str, str]]  # lane -> (queue URL, DLQ URL)
    secret_arns: dict[str, str]  # Pulumi logical name (e.g. "tls-server") -> ARN

    def queue_environment(self) -> dict[str, str]:
        """The CONVEYOR_*_URL variables of every lane's queue and DLQ."""
        return queue_environment(self.lane_urls)


def declared_resources(stack: str = "dev") -> DataPlane:
    """Run the program for `stack` under mocks and return its data-plane resources."""
    declaration: Declaration = declare(stack, DATA_PLANE_ONLY)
    return DataPlane(
        stack=stack,
        queues=tuple(declaration.of_type(QUEUE)),
        tables=tuple(declaration.of_type(TABLE)),
        secrets=tuple(declaration.of_type(SECRET)),
    )


def _unknown_inputs(resource: DeclaredResource, known: frozenset[str]) -> None:
    unknown = set(resource.inputs) - known
    if unknown:
        raise EmulatorError(
            f"{resource.type} {resource.name} declares {sorted(unknown)}, which "
            "conveyor_dev.emulators.provision does not mirror yet: teach it, or list them as "
            "not mirrored"
        )


def _attribute_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def queue_attributes(queue: DeclaredResource, arn_in_emulator: Mapping[str, str]) -> dict:
    """The SQS attributes of a declared queue, its redrive target rewritten to the emulator."""
    _unknown_inputs(queue, frozenset(QUEUE_ATTRIBUTES) | {"name"})
    attributes = {}
    for key, attribute in QUEUE_ATTRIBUTES.items():
        if key not in queue.inputs:
            continue
        value = queue.inputs[key]
        if key == "redrivePolicy":
            policy = json.loads(value)
            policy["deadLetterTargetArn"] = arn_in_emulator[policy["deadLetterTargetArn"]]
            value = json.dumps(policy)
        attributes[attribute] = _attribute_value(value)
    return attributes


def _redrive_targets_first(queues: tuple[DeclaredResource, ...]) -> list[DeclaredResource]:
    targets = {
        json.loads(q.inputs["redrivePolicy"])["deadLetterTargetArn"]
        for q in queues
        if "redrivePolicy" in q.inputs
    }
    return sorted(queues, key=lambda q: q.outputs["arn"] not in targets)


def _provision_queues(
    sqs: Any, queues: tuple[DeclaredResource, ...], prefix: str
) -> dict[str, str]:
    """Returns declared ARN -> emulator queue URL."""
    arn_in_emulator: dict[str, str] = {}
    url_in_emulator: dict[str, str] = {}
    for queue in _redrive_targets_first(queues):
        name = prefix + queue.inputs["name"]
        attributes = queue_attributes(queue, arn_in_emulator)
        try:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as error:
            if error.response["Error"]["Code"] not in (
                "AWS.SimpleQueueService.NonExistentQueue",
                "QueueDoesNotExist",
            ):
                raise
            url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        else:
            mutable = {k: v for k, v in attributes.items() if k != "FifoQueue"}
            sqs.set_queue_attributes(QueueUrl=url, Attributes=mutable)
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        arn_in_emulator[queue.outputs["arn"]] = arn["Attributes"]["QueueArn"]
        url_in_emulator[queue.outputs["arn"]] = url
    return url_in_emulator


def _key_schema(hash_key: str, range_key: str | None) -> list[dict[str, str]]:
    schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    if range_key:
        schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
    return schema


def table_definition(table: DeclaredResource) -> dict[str, Any]:
    """create_table arguments equal to the declared table."""
    _unknown_inputs(table, TABLE_INPUTS)
    inputs = table.inputs
    definition: dict[str, Any] = {
        "TableName": inputs["name"],
        "BillingMode": inputs["billingMode"],
        "KeySchema": _key_schema(inputs["hashKey"], inputs.get("rangeKey")),
        "AttributeDefinitions": [
            {"AttributeName": a["name"], "AttributeType": a["type"]} for a in inputs["attributes"]
        ],
        "DeletionProtectionEnabled": bool(inputs.get("deletionProtectionEnabled", False)),
    }
    indexes = []
    for index in inputs.get("globalSecondaryIndexes", []):
        projection: dict[str, Any] = {"ProjectionType": index["projectionType"]}
        if index.get("nonKeyAttributes"):
            projection["NonKeyAttributes"] = list(index["nonKeyAttributes"])
        key_schema = [
            {"AttributeName": k["attributeName"], "KeyType": k["keyType"]}
            for k in index.get("keySchemas", [])
        ] or _key_schema(index["hashKey"], index.get("rangeKey"))
        indexes.append(
            {"IndexName": index["name"], "KeySchema": key_schema, "Projection": projection}
        )
    if indexes:
        definition["GlobalSecondaryIndexes"] = indexes
    sse = inputs.get("serverSideEncryption") or {}
    if sse.get("enabled"):
        definition["SSESpecification"] = {"Enabled": True, "SSEType": "KMS"}
        if sse.get("kmsKeyArn"):
            definition["SSESpecification"]["KMSMasterKeyId"] = sse["kmsKeyArn"]
    return definition


def _same_shape(existing: Mapping[str, Any], definition: Mapping[str, Any]) -> bool:
    def indexes(items: Any) -> dict[str, Any]:
        return {
            i["IndexName"]: (i["KeySchema"], i["Projection"].get("ProjectionType"))
            for i in items or []
        }

    return (
        existing["KeySchema"] == definition["KeySchema"]
        and sorted(existing["AttributeDefinitions"], key=lambda a: a["AttributeName"])
        == sorted(definition["AttributeDefinitions"], key=lambda a: a["AttributeName"])
        and indexes(existing.get("GlobalSecondaryIndexes"))
        == indexes(definition.get("GlobalSecondaryIndexes"))
    )


def _provision_table(dynamodb: Any, table: DeclaredResource, prefix: str) -> str:
    definition = table_definition(table)
    name = definition["TableName"] = prefix + definition["TableName"]
    try:
        existing = dynamodb.describe_table(TableName=name)["Table"]
    except dynamodb.exceptions.ResourceNotFoundException:
        dynamodb.create_table(**definition)
        dynamodb.get_waiter("table_exists").wait(
            TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
        )
    else:
        if not _same_shape(existing, definition):
            raise EmulatorError(
                f"the emulator's table {name} has another key schema or other indexes than "
                "the program declares; delete it (or restart the emulator) and provision again"
            )
        protection = definition["DeletionProtectionEnabled"]
        if existing.get("DeletionProtectionEnabled", False) != protection:
            dynamodb.update_table(TableName=name, DeletionProtectionEnabled=protection)

    ttl = table.inputs.get("ttl") or {}
    current = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    if ttl.get("enabled") and current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["attributeName"]},
        )
    pitr = table.inputs.get("pointInTimeRecovery") or {}
    if pitr.get("enabled"):
        specification: dict[str, Any] = {"PointInTimeRecoveryEnabled": True}
        if pitr.get("recoveryPeriodInDays"):
            specification["RecoveryPeriodInDays"] = int(pitr["recoveryPeriodInDays"])
        try:
            dynamodb.update_continuous_backups(
                TableName=name, PointInTimeRecoverySpecification=specification
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "UnknownOperationException":
                raise
            # DynamoDB Local has no backups at all; nothing local depends on them.
            log.warning(
                "point-in-time recovery not enabled on %s: this DynamoDB (DynamoDB Local) does "
                "not implement UpdateContinuousBackups",
                name,
            )
    return name


def _provision_secret(secretsmanager: Any, secret: DeclaredResource, prefix: str) -> str:
    _unknown_inputs(secret, SECRET_INPUTS | SECRET_INPUTS_NOT_MIRRORED)
    name = prefix + secret.inputs["name"]
    try:
        return str(secretsmanager.describe_secret(SecretId=name)["ARN"])
    except secretsmanager.exceptions.ResourceNotFoundException:
        created = secretsmanager.create_secret(
            Name=name,
            Description=secret.inputs.get("description", ""),
            SecretString=PLACEHOLDER_SECRET_VALUE,
        )
        return str(created["ARN"])


def _task_queue(queues: tuple[DeclaredResource, ...], lane: str) -> DeclaredResource:
    """`lane`'s task queue (conveyor_infra.task_queue.task_queue_name), with its DLQ."""
    name = f"tasks{lane_suffix(lane, '-')}-queue"
    with_redrive = [q for q in queues if "redrivePolicy" in q.inputs and q.name == name]
    if len(with_redrive) != 1:
        raise EmulatorError(f"expected one queue {name} with a DLQ, the program declares {queues}")
    return with_redrive[0]


def _session(region: str) -> boto3.session.Session:
    session = boto3.session.Session(region_name=region)
    if session.get_credentials() is None:
        # Emulators accept any credentials; these are the conventional fake ones.
        session = boto3.session.Session(
            region_name=region, aws_access_key_id="testing", aws_secret_access_key="testing"
        )
    return session


def provision(
    endpoint_url: str,
    region: str,
    stack: str = "dev",
    *,
    service_endpoints: Mapping[str, str] | None = None,
    name_prefix: str = "",
) -> ProvisionedResources:
    """Create (or bring up to date) the declared data plane in the emulator at `endpoint_url`.

    `service_endpoints` sends a service ("dynamodb", "sqs", "secretsmanager") elsewhere;
    `name_prefix` goes in front of every queue, table and secret name, so that runs sharing one
    endpoint do not share resources. Idempotent: existing queues get the declared attributes
    again, an existing table is checked against the declaration, existing secrets keep their
    value.
    """
    declared = declared_resources(stack)
    if len(declared.tables) != 1:
        raise EmulatorError(f"expected one table, the program declares {len(declared.tables)}")
    session = _session(region)
    endpoints = service_endpoints or {}
    sqs, dynamodb, secretsmanager = (
        session.client(service, endpoint_url=endpoints.get(service, endpoint_url))
        for service in ("sqs", "dynamodb", "secretsmanager")
    )

    urls = _provision_queues(sqs, declared.queues, name_prefix)
    lane_urls = {}
    for lane in LANES:
        task_queue = _task_queue(declared.queues, lane)
        dlq_arn = json.loads(task_queue.inputs["redrivePolicy"])["deadLetterTargetArn"]
        lane_urls[lane] = (urls[task_queue.outputs["arn"]], urls[dlq_arn])
    return ProvisionedResources(
        table_name=_provision_table(dynamodb, declared.tables[0], name_prefix),
        lane_urls=lane_urls,
        secret_arns={
            s.name: _provision_secret(secretsmanager, s, name_prefix) for s in declared.secrets
        },
    )
