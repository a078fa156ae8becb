"""Queue, table, mTLS secrets and alerting, as each stack declares them (inputs the program
gave the mocks, not outputs echoed back)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conveyor import schema
from conveyor.domain import DEFAULT_LANE, LANES, MAX_ATTEMPTS_LIMIT, REDRIVE_MARGIN
from conveyor_dev.emulators.declared import Declaration, DeclaredResource, declare
from conveyor_dev.emulators.provision import DATA_PLANE_ONLY
from stack_support import STACKS, stack_config

QUEUE = "aws:sqs/queue:Queue"
TABLE = "aws:dynamodb/table:Table"
SECRET = "aws:secretsmanager/secret:Secret"


def _names(stack: str, lane: str) -> tuple[str, str]:
    """`lane`'s queue and DLQ names: the default lane's are those from before lanes."""
    base = f"conveyor-{stack}-tasks{'' if lane == DEFAULT_LANE else '-' + lane}"
    return f"{base}.fifo", f"{base}-dlq.fifo"


def _queues(
    declaration: Declaration, lane: str = DEFAULT_LANE
) -> tuple[DeclaredResource, DeclaredResource]:
    queues = {q.inputs["name"]: q for q in declaration.of_type(QUEUE)}
    assert set(queues) == {n for other in LANES for n in _names(declaration.stack, other)}
    queue, dlq = _names(declaration.stack, lane)
    return queues[queue], queues[dlq]


@pytest.mark.parametrize("stack", STACKS)
def test_the_default_lanes_queues_keep_their_pulumi_names_so_stacks_keep_them(
    declarations: dict[str, Declaration], stack: str
) -> None:
    queue, dlq = _queues(declarations[stack])
    assert (queue.name, dlq.name) == ("tasks-queue", "tasks-dlq")


@pytest.mark.parametrize("stack", STACKS)
def test_every_lane_has_the_same_queue_policies(
    declarations: dict[str, Declaration], stack: str
) -> None:
    def policies(q: DeclaredResource) -> dict[str, Any]:
        return {k: v for k, v in q.inputs.items() if k not in ("name", "redrivePolicy")}

    default = [policies(q) for q in _queues(declarations[stack])]
    for lane in LANES:
        assert [policies(q) for q in _queues(declarations[stack], lane)] == default


@pytest.mark.parametrize("lane", LANES)
@pytest.mark.parametrize("stack", STACKS)
def test_task_queue_is_fifo_with_a_fifo_dlq_behind_a_redrive_safety_net(
    declarations: dict[str, Declaration], stack: str, lane: str
) -> None:
    queue, dlq = _queues(declarations[stack], lane)

    for q in (queue, dlq):
        assert q.inputs["fifoQueue"] is True
        # MessageDeduplicationId = task id: a resend with another body must still dedupe.
        assert q.inputs["contentBasedDeduplication"] is False
        assert q.inputs["sqsManagedSseEnabled"] is True
        assert q.inputs["receiveWaitTimeSeconds"] == 20
        assert q.inputs["visibilityTimeoutSeconds"] == 30
    redrive = json.loads(queue.inputs["redrivePolicy"])
    assert redrive == {
        "deadLetterTargetArn": dlq.outputs["arn"],
        "maxReceiveCount": MAX_ATTEMPTS_LIMIT + REDRIVE_MARGIN,
    }
    assert "redrivePolicy" not in dlq.inputs
    assert dlq.inputs["messageRetentionSeconds"] > queue.inputs["messageRetentionSeconds"]

    high_throughput = stack_config(stack).high_throughput_fifo
    assert queue.inputs["deduplicationScope"] == ("messageGroup" if high_throughput else "queue")
    assert queue.inputs["fifoThroughputLimit"] == (
        "perMessageGroupId" if high_throughput else "perQueue"
    )


@pytest.mark.parametrize("stack", STACKS)
def test_task_table_is_exactly_the_schema_module_on_demand_with_pitr_and_ttl(
    declarations: dict[str, Declaration], stack: str
) -> None:
    (table,) = declarations[stack].of_type(TABLE)
    inputs = table.inputs
    assert inputs["name"] == f"conveyor-{stack}-tasks"
    assert inputs["billingMode"] == "PAY_PER_REQUEST"
    assert (inputs["hashKey"], inputs["rangeKey"]) == (schema.PK, schema.SK)
    assert {a["name"]: a["type"] for a in inputs["attributes"]} == schema.KEY_ATTRIBUTES
    assert len(inputs["attributes"]) == len(schema.KEY_ATTRIBUTES)
    declared_indexes = [
        (
            index["name"],
            [(k["attributeName"], k["keyType"]) for k in index["keySchemas"]],
            index["projectionType"],
            tuple(index["nonKeyAttributes"]),
        )
        for index in inputs["globalSecondaryIndexes"]
    ]
    assert declared_indexes == [
        (name, [(hash_key, "HASH"), (range_key, "RANGE")], "INCLUDE", projected)
        for name, hash_key, range_key, projected in schema.GLOBAL_SECONDARY_INDEXES
    ]
    assert inputs["ttl"] == {"attributeName": schema.TTL_ATTRIBUTE, "enabled": True}
    assert inputs["pointInTimeRecovery"] == {
        "enabled": True,
        "recoveryPeriodInDays": stack_config(stack).pitr_recovery_days,
    }
    assert inputs["serverSideEncryption"] == {"enabled": True}
    assert inputs["deletionProtectionEnabled"] is stack_config(stack).table_deletion_protection


@pytest.mark.parametrize("stack", STACKS)
def test_mtls_has_a_ca_a_server_cert_and_one_client_cert_per_tenant_named_by_cn(
    declarations: dict[str, Declaration], stack_files: dict[str, Any], stack: str
) -> None:
    declaration = declarations[stack]
    tenants = stack_config(stack).tenants

    (ca,) = declaration.of_type("tls:index/selfSignedCert:SelfSignedCert")
    assert ca.inputs["isCaCertificate"] is True
    assert set(ca.inputs["allowedUses"]) >= {"cert_signing"}
    requests = {r.name: r for r in declaration.of_type("tls:index/certRequest:CertRequest")}
    assert set(requests) == {"tls-server-csr", *(f"tls-client-{t}-csr" for t in tenants)}
    for tenant in tenants:
        assert requests[f"tls-client-{tenant}-csr"].inputs["subject"]["commonName"] == tenant
        cert = declaration.named(f"tls-client-{tenant}-cert")
        assert "client_auth" in cert.inputs["allowedUses"]
        assert "server_auth" not in cert.inputs["allowedUses"]
    assert "server_auth" in declaration.named("tls-server-cert").inputs["allowedUses"]

    secrets = {s.name: s for s in declaration.of_type(SECRET)}
    assert set(secrets) == {"tls-server", *(f"tls-client-{t}" for t in tenants)}
    (key,) = declaration.of_type("aws:kms/key:Key")
    for secret in secrets.values():
        assert secret.inputs["name"].startswith(f"conveyor-{stack}/tls/")
        assert secret.inputs["kmsKeyId"] == key.outputs["arn"]
    for version in declaration.of_type("aws:secretsmanager/secretVersion:SecretVersion"):
        assert set(json.loads(version.inputs["secretString"])) == {"ca_pem", "cert_pem", "key_pem"}


@pytest.mark.parametrize("stack", STACKS)
def test_dlq_depth_above_zero_alarms_to_the_stacks_sns_targets(
    declarations: dict[str, Declaration], stack_files: dict[str, Any], stack: str
) -> None:
    declaration = declarations[stack]
    (topic,) = declaration.of_type("aws:sns/topic:Topic")
    alarms = declaration.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    # One per lane's DLQ.
    assert sorted(a.inputs["dimensions"]["QueueName"] for a in alarms) == sorted(
        _queues(declaration, lane)[1].inputs["name"] for lane in LANES
    )
    assert declaration.named("alerting-dlq-not-empty").inputs["dimensions"] == {
        "QueueName": _queues(declaration)[1].inputs["name"]
    }
    for alarm in alarms:
        assert alarm.inputs["namespace"] == "AWS/SQS"
        assert alarm.inputs["metricName"] == "ApproximateNumberOfMessagesVisible"
        assert alarm.inputs["comparisonOperator"] == "GreaterThanThreshold"
        assert alarm.inputs["threshold"] == 0
        assert alarm.inputs["alarmActions"] == [topic.outputs["arn"]]

    subscriptions = declaration.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert len(subscriptions) == len(stack_config(stack).alarm_emails)
    assert sorted(s.inputs["endpoint"] for s in subscriptions) == sorted(
        stack_files[stack].get("conveyor:alarmEmails", [])
    )
    assert all(s.inputs["topic"] == topic.outputs["arn"] for s in subscriptions)


def test_the_emulators_data_plane_is_the_full_programs_data_plane(
    declarations: dict[str, Declaration],
) -> None:
    """provision() runs with deployCompute=false; that must not change a single input."""
    data_plane_only = declare("prod", DATA_PLANE_ONLY)

    def inputs(declaration: Declaration) -> dict[str, Any]:
        return {
            r.urn: r.inputs
            for r in declaration
            if r.type in (QUEUE, TABLE, SECRET, "aws:kms/key:Key")
        }

    assert inputs(data_plane_only) == inputs(declarations["prod"])
    assert len(inputs(data_plane_only)) == 2 * len(LANES) + 1 + 3 + 1
