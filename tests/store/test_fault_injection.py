"""Each AWS fault kind of conveyor_dev.inject.faults against the real emulator: what the caller
sees, whether the write landed, and that botocore's own retries run through the injected fault."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from conveyor.aws import AwsClients, cancellation_reasons, error_code, is_dependency_fault
from conveyor.ops import OpsSettings
from conveyor.queue import TaskQueue
from conveyor.settings import AwsSettings
from conveyor_dev.emulators.backend import Backend
from conveyor_dev.inject import faults
from store_support import Raw, ddb_calls

PK = {"pk": {"S": "FAULT#probe"}, "sk": {"S": "probe"}}


@pytest.fixture
def short(aws_backend: Backend, aws_credentials: None) -> AwsClients:
    """Clients with two attempts and a 0.5 s read timeout, so timeouts are quick to reach."""
    return AwsClients(
        AwsSettings(  # type: ignore[call-arg]
            **aws_backend.env(),
            aws_max_attempts=2,
            aws_read_timeout_seconds=0.5,
        )
    )


def put(clients: AwsClients, raw: Raw, *, conditional: bool = False) -> Any:
    condition = {"ConditionExpression": "attribute_not_exists(pk)"} if conditional else {}
    return clients.client("dynamodb").put_item(TableName=raw.res.table, Item=PK, **condition)


def landed(raw: Raw) -> bool:
    return raw.item("FAULT#probe", "probe") is not None


@pytest.mark.parametrize(
    ("kind", "code", "status"),
    [
        ("throttle", "ProvisionedThroughputExceededException", 400),
        ("error", "InternalServerError", 500),
    ],
)
def test_error_responses_are_retried_by_botocore_then_surface(short, raw, kind, code, status):
    throttled = ddb_calls("PutItem", "throttled")
    with faults.armed(f"dynamodb.PutItem={kind}") as plan, pytest.raises(ClientError) as err:
        put(short, raw)
    assert plan.rules[0].hits == 2  # both attempts hit: botocore retried it
    assert error_code(err.value) == code
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert is_dependency_fault(err.value)
    assert not landed(raw)
    if kind == "throttle":  # Conveyor's request counter sees a throttle, as from AWS
        assert ddb_calls("PutItem", "throttled") == throttled + 1  # counted once per call


def test_a_fault_within_the_retry_budget_is_absorbed(short, raw):
    with faults.armed("dynamodb.PutItem=throttle count=1") as plan:
        put(short, raw)
    assert plan.rules[0].hits == 1
    assert landed(raw)


@pytest.mark.parametrize(
    ("kind", "exception"), [("reset", ConnectionClosedError), ("down", EndpointConnectionError)]
)
def test_transport_faults_never_reach_aws(short, raw, kind, exception):
    with faults.armed(f"dynamodb.PutItem={kind}"), pytest.raises(exception) as err:
        put(short, raw)
    assert is_dependency_fault(err.value)
    assert not landed(raw)


def test_a_lost_response_lands_the_write_and_botocore_retries_it(short, raw):
    """The retry of a conditional write fails its condition against its own first attempt:
    the caller sees a failure for a write that was applied (issue 8, defect 2)."""
    with faults.armed("dynamodb.PutItem=lost count=1"), pytest.raises(ClientError) as err:
        put(short, raw, conditional=True)
    assert error_code(err.value) == "ConditionalCheckFailedException"
    assert landed(raw)


def test_a_response_lost_on_every_attempt_is_a_transport_error_after_the_write(short, raw):
    with faults.armed("dynamodb.PutItem=lost"), pytest.raises(ConnectionClosedError):
        put(short, raw)
    assert landed(raw)


def test_transaction_conflict_cancels_the_transaction_and_writes_nothing(short, raw):
    items = [
        {"Put": {"TableName": raw.res.table, "Item": {"pk": {"S": f"FAULT#{i}"}, "sk": {"S": "x"}}}}
        for i in range(3)
    ]
    with faults.armed("dynamodb.TransactWriteItems=conflict"), pytest.raises(ClientError) as err:
        short.client("dynamodb").transact_write_items(TransactItems=items)
    assert error_code(err.value) == "TransactionCanceledException"
    assert cancellation_reasons(err.value) == {"TransactionConflict"}
    assert len(err.value.response["CancellationReasons"]) == 3
    assert not is_dependency_fault(err.value)  # a conflict is an answer: re-read and decide
    assert raw.items() == []


def test_a_hang_longer_than_the_read_timeout_times_out_each_attempt(short, raw):
    started = time.monotonic()
    with faults.armed("dynamodb.PutItem=hang") as plan, pytest.raises(ReadTimeoutError):
        put(short, raw)
    took = time.monotonic() - started
    assert plan.rules[0].hits == 2
    assert 1.0 <= took < 3.0  # two attempts of 0.5 s, plus botocore's back-off between them
    assert not landed(raw)


def test_a_shorter_hang_delays_the_call_which_then_goes_through(short, raw):
    started = time.monotonic()
    with faults.armed("dynamodb.PutItem=hang seconds=0.3"):
        put(short, raw)
    assert time.monotonic() - started >= 0.3
    assert landed(raw)


def test_a_hang_ends_with_its_window(short, raw):
    short.client("dynamodb")  # made before the window opens: the window times the hang alone
    started = time.monotonic()
    with faults.armed("dynamodb.PutItem=hang for=0.3"):
        response = put(short, raw)
    assert time.monotonic() - started >= 0.3
    # A hang that outlived its 0.3 s window would have met the 0.5 s read timeout, and botocore
    # would have tried again. Counting attempts proves it where an upper bound on wall-clock
    # time did not: a slow emulator or a busy CI host took the same call 0.73 s.
    assert response["ResponseMetadata"]["RetryAttempts"] == 0
    assert landed(raw)


def test_sqs_down_while_dynamodb_is_up(short, raw, settings: OpsSettings):
    queue = TaskQueue(short, settings)
    with faults.armed("sqs.*=down"):
        with pytest.raises(EndpointConnectionError):
            queue.depths()
        put(short, raw)
    assert landed(raw)
    assert queue.depths()  # back


def test_dynamodb_down_while_sqs_is_up(short, raw, settings: OpsSettings):
    queue = TaskQueue(short, settings)
    with faults.armed("dynamodb.*=down"):
        with pytest.raises(EndpointConnectionError):
            put(short, raw)
        queue.send("0123abcd", "demo.sleep", tenant="t")
    assert [b["task_id"] for b in raw.bodies(raw.res.queue_url)] == ["0123abcd"]


def test_a_while_file_opens_and_closes_the_outage(short, raw, tmp_path):
    flag = tmp_path / "outage"
    with faults.armed(f"dynamodb.*=error while={flag}") as plan:
        put(short, raw)  # closed: passes
        flag.touch()
        with pytest.raises(ClientError):
            short.client("dynamodb").get_item(TableName=raw.res.table, Key=PK)
        flag.unlink()
        assert short.client("dynamodb").get_item(TableName=raw.res.table, Key=PK)["Item"]
    assert plan.rules[0].hits == 2
