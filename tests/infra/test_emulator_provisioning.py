"""The emulator gets the queues, table and secrets exactly as the Pulumi program declares them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
from conveyor import schema
from conveyor_dev.emulators.provision import (
    PLACEHOLDER_SECRET_VALUE,
    DataPlane,
    EmulatorError,
    ProvisionedResources,
    declared_resources,
    provision,
    queue_attributes,
)
from conveyor_dev.local.system import free_port
from moto.server import ThreadedMotoServer

STACK = "dev"
REGION = "eu-west-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    saved = {key: os.environ.get(key) for key in FAKE_CREDENTIALS}
    os.environ.update(FAKE_CREDENTIALS)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def declared() -> DataPlane:
    return declared_resources(STACK)


@pytest.fixture(scope="module")
def provisioned(endpoint: str) -> ProvisionedResources:
    return provision(endpoint, REGION, stack=STACK)


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION)


def _inputs_of(declared: DataPlane, queue_name: str) -> dict[str, Any]:
    return dict(next(q.inputs for q in declared.queues if q.inputs["name"] == queue_name))


def test_the_declared_data_plane_is_a_queue_and_dlq_per_lane_one_table_and_the_tls_secrets(
    declared: DataPlane,
) -> None:
    assert sorted(q.inputs["name"] for q in declared.queues) == [
        "conveyor-dev-tasks-dlq.fifo",
        "conveyor-dev-tasks-high-dlq.fifo",
        "conveyor-dev-tasks-high.fifo",
        "conveyor-dev-tasks.fifo",
    ]
    assert [t.inputs["name"] for t in declared.tables] == ["conveyor-dev-tasks"]
    assert sorted(s.name for s in declared.secrets) == [
        "tls-client-acme",
        "tls-client-demo",
        "tls-server",
    ]


def test_emulator_queues_carry_the_declared_attributes(
    endpoint: str, declared: DataPlane, provisioned: ProvisionedResources
) -> None:
    sqs = _client("sqs", endpoint)
    main = sqs.get_queue_attributes(QueueUrl=provisioned.queue_url, AttributeNames=["All"])
    dlq = sqs.get_queue_attributes(QueueUrl=provisioned.dlq_url, AttributeNames=["All"])
    main_attrs, dlq_attrs = main["Attributes"], dlq["Attributes"]

    for attrs, name in (
        (main_attrs, "conveyor-dev-tasks.fifo"),
        (dlq_attrs, "conveyor-dev-tasks-dlq.fifo"),
    ):
        inputs = _inputs_of(declared, name)
        assert attrs["QueueArn"].endswith(f":{name}")
        assert attrs["FifoQueue"] == "true" and inputs["fifoQueue"] is True
        assert attrs["ContentBasedDeduplication"] == "false"
        assert inputs["contentBasedDeduplication"] is False
        assert attrs["SqsManagedSseEnabled"] == "true" and inputs["sqsManagedSseEnabled"] is True
        assert int(attrs["VisibilityTimeout"]) == inputs["visibilityTimeoutSeconds"]
        assert int(attrs["ReceiveMessageWaitTimeSeconds"]) == inputs["receiveWaitTimeSeconds"] == 20
        assert int(attrs["MessageRetentionPeriod"]) == inputs["messageRetentionSeconds"]
        assert attrs["DeduplicationScope"] == inputs["deduplicationScope"]
        assert attrs["FifoThroughputLimit"] == inputs["fifoThroughputLimit"]

    declared_redrive = json.loads(_inputs_of(declared, "conveyor-dev-tasks.fifo")["redrivePolicy"])
    emulator_redrive = json.loads(main_attrs["RedrivePolicy"])
    # Same safety net, pointed at the emulator's own DLQ instead of the mock cloud's ARN.
    assert int(emulator_redrive["maxReceiveCount"]) == declared_redrive["maxReceiveCount"]
    assert emulator_redrive["deadLetterTargetArn"] == dlq_attrs["QueueArn"]
    assert "RedrivePolicy" not in dlq_attrs


def test_emulator_table_has_the_declared_schema_ttl_and_pitr(
    endpoint: str, declared: DataPlane, provisioned: ProvisionedResources
) -> None:
    dynamodb = _client("dynamodb", endpoint)
    inputs = declared.tables[0].inputs
    table = dynamodb.describe_table(TableName=provisioned.table_name)["Table"]

    assert table["TableName"] == inputs["name"]
    assert table["BillingModeSummary"]["BillingMode"] == inputs["billingMode"]
    assert table["KeySchema"] == [
        {"AttributeName": schema.PK, "KeyType": "HASH"},
        {"AttributeName": schema.SK, "KeyType": "RANGE"},
    ]
    assert {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]} == {
        a["name"]: a["type"] for a in inputs["attributes"]
    }
    emulator_indexes = {
        index["IndexName"]: (
            [(k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]],
            index["Projection"]["ProjectionType"],
            sorted(index["Projection"]["NonKeyAttributes"]),
        )
        for index in table["GlobalSecondaryIndexes"]
    }
    declared_indexes = {
        index["name"]: (
            [(k["attributeName"], k["keyType"]) for k in index["keySchemas"]],
            index["projectionType"],
            sorted(index["nonKeyAttributes"]),
        )
        for index in inputs["globalSecondaryIndexes"]
    }
    assert emulator_indexes == declared_indexes
    assert table["SSEDescription"]["Status"] == "ENABLED"
    assert inputs["serverSideEncryption"]["enabled"] is True
    assert table["DeletionProtectionEnabled"] is inputs["deletionProtectionEnabled"]

    ttl = dynamodb.describe_time_to_live(TableName=provisioned.table_name)
    assert ttl["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": inputs["ttl"]["attributeName"],
    }
    assert inputs["ttl"]["attributeName"] == schema.TTL_ATTRIBUTE

    backups = dynamodb.describe_continuous_backups(TableName=provisioned.table_name)
    pitr = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
    assert pitr["PointInTimeRecoveryStatus"] == "ENABLED"
    assert pitr["RecoveryPeriodInDays"] == inputs["pointInTimeRecovery"]["recoveryPeriodInDays"]


def test_emulator_secrets_exist_with_a_placeholder_value(
    endpoint: str, declared: DataPlane, provisioned: ProvisionedResources
) -> None:
    secretsmanager = _client("secretsmanager", endpoint)
    assert set(provisioned.secret_arns) == {s.name for s in declared.secrets}
    for secret in declared.secrets:
        arn = provisioned.secret_arns[secret.name]
        described = secretsmanager.describe_secret(SecretId=arn)
        assert described["Name"] == secret.inputs["name"]
        assert described["Description"] == secret.inputs["description"]
        value = secretsmanager.get_secret_value(SecretId=arn)["SecretString"]
        assert value == PLACEHOLDER_SECRET_VALUE


def test_provisioning_again_changes_nothing_and_keeps_secret_values(
    endpoint: str, provisioned: ProvisionedResources
) -> None:
    secretsmanager = _client("secretsmanager", endpoint)
    server_arn = provisioned.secret_arns["tls-server"]
    secretsmanager.put_secret_value(SecretId=server_arn, SecretString="local certificate")

    again = provision(endpoint, REGION, stack=STACK)

    assert again == provisioned
    assert secretsmanager.get_secret_value(SecretId=server_arn)["SecretString"] == (
        "local certificate"
    )
    queues = _client("sqs", endpoint).list_queues(QueueNamePrefix="conveyor-dev")["QueueUrls"]
    assert sorted(queues) == sorted(url for urls in provisioned.lane_urls.values() for url in urls)
    assert provisioned.lane_urls["high"] == (
        queues[queues.index(provisioned.lane_urls["high"][0])],
        queues[queues.index(provisioned.lane_urls["high"][1])],
    )
    assert provisioned.lane_urls["high"][0].endswith("/conveyor-dev-tasks-high.fifo")
    assert provisioned.lane_urls["high"][1].endswith("/conveyor-dev-tasks-high-dlq.fifo")


def test_an_emulator_table_that_contradicts_the_declaration_is_reported(endpoint: str) -> None:
    dynamodb = _client("dynamodb", endpoint)
    dynamodb.create_table(
        TableName="conveyor-staging-tasks",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    )
    with pytest.raises(EmulatorError, match="another key schema"):
        provision(endpoint, REGION, stack="staging")


def test_a_declared_queue_input_the_emulator_cannot_mirror_fails_loudly(
    declared: DataPlane,
) -> None:
    dlq = next(q for q in declared.queues if "redrivePolicy" not in q.inputs)
    with_new_input = replace(dlq, inputs={**dlq.inputs, "redriveAllowPolicy": "{}"})
    with pytest.raises(EmulatorError, match="redriveAllowPolicy"):
        queue_attributes(with_new_input, {})


def test_provision_works_from_a_fresh_process_without_pulumi_in_a_few_seconds(
    endpoint: str, provisioned: ProvisionedResources
) -> None:
    script = (
        "import sys, json\n"
        "from conveyor_dev.emulators.provision import provision\n"
        f"r = provision({endpoint!r}, {REGION!r}, stack={STACK!r})\n"
        "print(json.dumps({'queue_url': r.queue_url, 'pulumi': 'pulumi' in sys.modules}))\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, **FAKE_CREDENTIALS},
        check=True,
    )
    elapsed = time.monotonic() - started
    result = json.loads(done.stdout)
    assert result == {"queue_url": provisioned.queue_url, "pulumi": False}
    assert elapsed < 10, f"provision took {elapsed:.1f}s"
