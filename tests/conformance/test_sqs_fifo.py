"""SQS FIFO and Secrets Manager: the delivery semantics the relay, workers and DLQ handling
rely on. Each case says what AWS does and where AWS documents it."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from aws_support import error_code, new_fifo_queue
from support import wait_for


@pytest.fixture
def sqs(aws: Any) -> Any:
    return aws.client("sqs")


@pytest.fixture
def queue(sqs: Any) -> str:
    return new_fifo_queue(sqs)


def _send(sqs: Any, queue: str, body: str, *, group: str = "g", dedup: str | None = None) -> Any:
    return sqs.send_message(
        QueueUrl=queue, MessageBody=body, MessageGroupId=group, MessageDeduplicationId=dedup or body
    )


def _receive(sqs: Any, queue: str, *, visibility: int = 30, wait: int = 0, count: int = 10) -> list:
    return list(
        sqs.receive_message(
            QueueUrl=queue,
            MaxNumberOfMessages=count,
            VisibilityTimeout=visibility,
            WaitTimeSeconds=wait,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        ).get("Messages", [])
    )


def _bodies(messages: list) -> list[str]:
    return [m["Body"] for m in messages]


def test_a_duplicate_within_five_minutes_is_accepted_but_not_delivered(sqs, queue):
    """AWS: a message sent with a MessageDeduplicationId already used in the last 5 minutes is
    accepted (SendMessage succeeds) but not delivered a second time.
    Doc: SQS Developer Guide, "Exactly-once processing in Amazon SQS" / "Using the message
    deduplication ID"."""
    _send(sqs, queue, "one", dedup="d")
    _send(sqs, queue, "two", dedup="d")
    assert _bodies(_receive(sqs, queue)) == ["one"]


def test_the_deduplication_window_outlives_a_deleted_message(sqs, queue):
    """AWS: the 5-minute deduplication interval holds even after the first message was
    received and deleted: a resend with the same id is still dropped. (Conveyor's redrive adds
    `.v<version>` to its deduplication ids for this reason.)
    Doc: SQS Developer Guide, "Using the message deduplication ID" (deduplication interval)."""
    _send(sqs, queue, "one", dedup="d")
    [message] = _receive(sqs, queue)
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    _send(sqs, queue, "again", dedup="d")
    assert _receive(sqs, queue, wait=1) == []


def test_one_message_of_a_group_is_in_flight_at_a_time(sqs, queue):
    """AWS: while a message of a group is in flight, no later message of that group is
    returned; other groups are not held back. After the delete, the next one comes.
    Doc: SQS Developer Guide, "Using the message group ID" / "FIFO queue delivery logic"."""
    for body in ("a1", "a2"):
        _send(sqs, queue, body, group="a")
    _send(sqs, queue, "b1", group="b")
    first = _receive(sqs, queue, count=1)
    assert _bodies(first) in (["a1"], ["b1"])
    rest = _receive(sqs, queue)
    held = {first[0]["Body"], *_bodies(rest)}
    assert "a2" not in held, "a second message of group a was delivered while a1 was in flight"
    assert held == {"a1", "b1"}
    a1 = next(m for m in [*first, *rest] if m["Body"] == "a1")
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=a1["ReceiptHandle"])
    assert _bodies(_receive(sqs, queue)) == ["a2"]


def test_a_receive_skips_every_group_in_flight(sqs, queue):
    """AWS: a FIFO queue delivers across message groups, ordered only within a group, and
    returns no message of a group while one of its messages is in flight. So a newer group is
    delivered, however long the older groups' backlogs, as soon as each older group has a
    message in flight. Conveyor's tenant groups rely on exactly this (conveyor.queue): a
    tenant's task waits behind another tenant's backlog only until that tenant's groups of the
    type are each busy, never behind the whole backlog. Which group a receive picks among those
    free is not documented (the emulators pick the oldest head), so nothing relies on it.
    Doc: SQS Developer Guide, "FIFO queue delivery logic" / "Using the message group ID"."""
    for n in range(10):
        for group in ("a0", "a1"):
            _send(sqs, queue, f"{group}-{n}", group=group)
    _send(sqs, queue, "b", group="b")
    heads = [body for _ in range(3) for body in _bodies(_receive(sqs, queue, count=1))]
    assert sorted(heads) == ["a0-0", "a1-0", "b"]  # each group's head, b's at the latest third


def test_visibility_timeout_hides_and_change_message_visibility_returns_it(sqs, queue):
    """AWS: a received message is invisible for its visibility timeout, then delivered again;
    ChangeMessageVisibility with 0 makes it visible at once.
    Doc: SQS Developer Guide, "Amazon SQS visibility timeout"."""
    _send(sqs, queue, "m")
    [message] = _receive(sqs, queue, visibility=30)
    assert _receive(sqs, queue) == []
    sqs.change_message_visibility(
        QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    again = _receive(sqs, queue, visibility=1)
    assert _bodies(again) == ["m"]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    third = wait_for(lambda: _receive(sqs, queue), 15, "the message after its 1 s visibility")
    assert _bodies(third) == ["m"]


def test_messages_in_flight_are_counted_apart_from_visible_ones(sqs, queue):
    """AWS: ApproximateNumberOfMessagesNotVisible counts messages in flight (received, neither
    deleted nor past their visibility timeout), ApproximateNumberOfMessages the visible ones;
    both are approximate and may lag (so this waits for them). The DLQ inspect and redrive
    read them to tell a message another reader holds from one that is not there.
    Doc: SQS API Reference, GetQueueAttributes, "ApproximateNumberOfMessagesNotVisible"."""
    _send(sqs, queue, "a", group="a")
    _send(sqs, queue, "b", group="b")

    def counts() -> tuple[int, int]:
        attrs = sqs.get_queue_attributes(
            QueueUrl=queue,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attrs["ApproximateNumberOfMessages"]),
            int(attrs["ApproximateNumberOfMessagesNotVisible"]),
        )

    [held] = _receive(sqs, queue, visibility=60, count=1)
    wait_for(lambda: counts() == (1, 1), 90, "one visible and one in flight")
    sqs.change_message_visibility(
        QueueUrl=queue, ReceiptHandle=held["ReceiptHandle"], VisibilityTimeout=0
    )
    wait_for(lambda: counts() == (2, 0), 90, "both visible again")
    [again] = _receive(sqs, queue, visibility=60, count=1)
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=again["ReceiptHandle"])
    wait_for(lambda: counts() == (1, 0), 90, "the deleted one counted nowhere")


def test_a_stale_receipt_handle_does_not_delete_a_message_received_again(sqs, queue):
    """AWS: each receive gets a new receipt handle; for a FIFO queue, the handle of an earlier
    delivery is expired once the message has been received again, so a delete with it does not
    remove the message that another consumer now holds.
    Doc: SQS API Reference, DeleteMessage ("you must provide the most recently received
    ReceiptHandle"); SQS Developer Guide, "Amazon SQS visibility timeout"."""
    _send(sqs, queue, "m")
    [old] = _receive(sqs, queue, visibility=30)
    sqs.change_message_visibility(
        QueueUrl=queue, ReceiptHandle=old["ReceiptHandle"], VisibilityTimeout=0
    )
    [new] = _receive(sqs, queue, visibility=30)
    assert new["ReceiptHandle"] != old["ReceiptHandle"]
    try:
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=old["ReceiptHandle"])
    except Exception as exc:  # AWS answers ReceiptHandleIsInvalid / InvalidParameterValue
        assert error_code(exc) in ("ReceiptHandleIsInvalid", "InvalidParameterValue")
    sqs.change_message_visibility(
        QueueUrl=queue, ReceiptHandle=new["ReceiptHandle"], VisibilityTimeout=0
    )
    assert _bodies(_receive(sqs, queue)) == ["m"], "the stale handle deleted the message"


def test_a_message_moves_to_the_fifo_dlq_after_max_receive_count(sqs):
    """AWS: with a redrive policy, a message received maxReceiveCount times without being
    deleted is moved to the dead-letter queue (which must be FIFO too) on the next receive.
    Doc: SQS Developer Guide, "Using dead-letter queues in Amazon SQS"."""
    dlq = new_fifo_queue(sqs)
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    queue = new_fifo_queue(sqs, RedrivePolicy=policy)
    _send(sqs, queue, "poison")
    for _ in range(2):
        [message] = _receive(sqs, queue)
        sqs.change_message_visibility(
            QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    assert _receive(sqs, queue) == []
    moved = wait_for(lambda: _receive(sqs, dlq), 15, "the message in the DLQ")
    assert _bodies(moved) == ["poison"]


def test_a_long_poll_returns_as_soon_as_a_message_arrives(sqs, queue):
    """AWS: ReceiveMessage with WaitTimeSeconds returns as soon as a message is available,
    not at the end of the wait.
    Doc: SQS Developer Guide, "Amazon SQS short and long polling"."""
    sender = threading.Timer(0.5, lambda: _send(sqs, queue, "late"))
    started = time.monotonic()
    sender.start()
    try:
        got = _receive(sqs, queue, wait=10)
    finally:
        sender.join()
    assert _bodies(got) == ["late"]
    assert time.monotonic() - started < 5


def test_message_attributes_round_trip(sqs, queue):
    """AWS: String, Number and Binary message attributes come back as sent.
    Doc: SQS Developer Guide, "Amazon SQS message attributes"."""
    attributes = {
        "traceparent": {"DataType": "String", "StringValue": "00-abc-def-01"},
        "attempt": {"DataType": "Number", "StringValue": "3"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
    }
    sqs.send_message(
        QueueUrl=queue,
        MessageBody="m",
        MessageGroupId="g",
        MessageDeduplicationId="m",
        MessageAttributes=attributes,
    )
    [message] = _receive(sqs, queue)
    assert message["MessageAttributes"] == attributes


def test_batch_send_and_batch_delete(sqs, queue):
    """AWS: SendMessageBatch and DeleteMessageBatch report each entry as Successful (or
    Failed) by its Id; deleted messages are not delivered again.
    Doc: SQS Developer Guide, "Amazon SQS batch actions"."""
    sent = sqs.send_message_batch(
        QueueUrl=queue,
        Entries=[
            {
                "Id": f"e{i}",
                "MessageBody": f"m{i}",
                "MessageGroupId": "g",
                "MessageDeduplicationId": f"m{i}",
            }
            for i in range(3)
        ],
    )
    assert sorted(e["Id"] for e in sent["Successful"]) == ["e0", "e1", "e2"]
    assert not sent.get("Failed")
    messages = _receive(sqs, queue)
    assert _bodies(messages) == ["m0", "m1", "m2"]
    deleted = sqs.delete_message_batch(
        QueueUrl=queue,
        Entries=[
            {"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ],
    )
    assert sorted(e["Id"] for e in deleted["Successful"]) == ["d0", "d1", "d2"]
    assert not deleted.get("Failed")
    assert _receive(sqs, queue, wait=1) == []


def test_secrets_manager_creates_and_reads_a_secret(aws):
    """AWS: CreateSecret stores a SecretString that GetSecretValue returns, with the same ARN;
    creating the name again is ResourceExistsException.
    Doc: Secrets Manager API Reference, CreateSecret and GetSecretValue."""
    secrets = aws.client("secretsmanager")
    name = f"conf/{time.monotonic_ns()}"
    created = secrets.create_secret(Name=name, SecretString="s3cret")
    got = secrets.get_secret_value(SecretId=name)
    assert (got["SecretString"], got["ARN"]) == ("s3cret", created["ARN"])
    with pytest.raises(Exception) as caught:
        secrets.create_secret(Name=name, SecretString="other")
    assert error_code(caught.value) == "ResourceExistsException"
