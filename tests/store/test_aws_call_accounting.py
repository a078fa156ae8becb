"""What counts as time in an AWS call (conveyor.aws), which the API's overhead metric
subtracts from a SubmitTask's handling time, and the client-side checks the clients skip."""

from __future__ import annotations

import contextlib
import time

from botocore.exceptions import ClientError
from conveyor.aws import aws_seconds_on_this_thread
from store_support import metric

BUILD_SECONDS = 0.05


def test_building_the_request_counts_as_time_in_the_aws_call(clients, settings):
    """botocore validates, resolves the endpoint and serializes before its `before-call` event;
    a slow step there (standing in for serializing a large request) is AWS-call time."""
    sqs = clients.client("sqs")
    event = "before-parameter-build.sqs.GetQueueAttributes"

    def slow_build(**_: object) -> None:
        time.sleep(BUILD_SECONDS)

    sqs.meta.events.register(event, slow_build)
    try:
        before = aws_seconds_on_this_thread()
        sqs.get_queue_attributes(QueueUrl=settings.queue_url, AttributeNames=["All"])
        spent = aws_seconds_on_this_thread() - before
    finally:
        sqs.meta.events.unregister(event, slow_build)
    assert spent >= BUILD_SECONDS


def test_requests_are_not_validated_client_side(clients, settings):
    """botocore's parameter validation is off (its largest CPU cost before the HTTP exchange):
    a malformed request goes to the service, which judges it, instead of failing locally."""

    def sent() -> float:
        return sum(
            metric(
                "conveyor_aws_requests_total",
                service="sqs",
                operation="GetQueueAttributes",
                outcome=outcome,
            )
            for outcome in ("success", "error")
        )

    before = sent()
    with contextlib.suppress(ClientError):  # whatever the service makes of it
        clients.client("sqs").get_queue_attributes(
            QueueUrl=settings.queue_url,
            AttributeNames="All",  # a string where the model wants a list
        )
    assert sent() == before + 1
