"""Tiers sharing one explicit endpoint (issue 7, item 5): each start_backend() provisions its
own resource names, so one tier's worker never takes another tier's message."""

from __future__ import annotations

import json

from conveyor_dev.emulators.backend import EMULATOR_CREDENTIALS, start_backend


def test_two_harnesses_on_one_explicit_endpoint_get_their_own_queues_and_table(aws_backend):
    shared = {
        **{k: v for k, v in aws_backend.env().items() if k.startswith("AWS_ENDPOINT_URL")},
        "AWS_REGION": aws_backend.region,
        **EMULATOR_CREDENTIALS,
    }
    with start_backend(shared) as first, start_backend(shared) as second:
        assert first.kind == second.kind == "explicit"
        assert first.resource_prefix != second.resource_prefix
        one, two = first.provision("dev"), second.provision("dev")
    assert one.table_name != two.table_name
    assert one.table_name.startswith(first.resource_prefix)
    assert len({one.queue_url, one.dlq_url, two.queue_url, two.dlq_url}) == 4
    assert one.secret_arns.keys() == two.secret_arns.keys()
    assert not set(one.secret_arns.values()) & set(two.secret_arns.values())

    sqs = aws_backend.client("sqs")
    sqs.send_message(
        QueueUrl=one.queue_url,
        MessageBody="for one",
        MessageGroupId="g",
        MessageDeduplicationId="x",
    )
    assert "Messages" not in sqs.receive_message(QueueUrl=two.queue_url, WaitTimeSeconds=1)
    got = sqs.receive_message(QueueUrl=one.queue_url, WaitTimeSeconds=1)["Messages"]
    assert [m["Body"] for m in got] == ["for one"]
    for resources in (one, two):  # each queue dead-letters into its own DLQ
        policy = sqs.get_queue_attributes(
            QueueUrl=resources.queue_url, AttributeNames=["RedrivePolicy"]
        )["Attributes"]["RedrivePolicy"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=resources.dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        assert json.loads(policy)["deadLetterTargetArn"] == dlq_arn
    ddb = aws_backend.client("dynamodb")
    assert {one.table_name, two.table_name} <= set(ddb.list_tables()["TableNames"])
