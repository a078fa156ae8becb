"""What counts as time in an AWS call (conveyor.aws), which the API's overhead metric
subtracts from a SubmitTask's handling time, and the client-side checks the clients skip."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from botocore.useragent import UserAgentString, register_feature_id
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


def _canonical(user_agent: str | bytes) -> str:
    """The User-Agent with its feature list ("m/a,b") sorted: botocore joins a set."""
    text = user_agent.decode() if isinstance(user_agent, bytes) else user_agent
    return " ".join(
        "m/" + ",".join(sorted(part[2:].split(","))) if part.startswith("m/") else part
        for part in text.split(" ")
    )


def _sent_user_agents(
    client: Any, event_suffix: str, calls: Callable[[], None]
) -> list[tuple[str, str]]:
    """(header sent, botocore's own build of it at that moment) for each request `calls` makes."""
    seen: list[tuple[str, str]] = []

    def record(request: Any, **_: object) -> None:
        built = UserAgentString.to_string(client._user_agent_creator)
        seen.append((_canonical(request.headers["User-Agent"]), _canonical(built)))

    event = f"before-send.{event_suffix}"
    client.meta.events.register(event, record)
    try:
        calls()
    finally:
        client.meta.events.unregister(event, record)
    return seen


def test_the_user_agent_kept_per_feature_set_is_botocore_s_own(clients, settings):
    """The clients build their User-Agent once per feature set, not twice per call
    (conveyor.aws._reuse_user_agent): the header sent is still the string botocore would have
    built, the process's app id (the metering proxy's per-process billing) included, and a
    feature the call adds is in it (seen failing with the features left out of the key)."""
    sqs = clients.client("sqs")

    def two_calls() -> None:
        for _ in range(2):
            sqs.get_queue_attributes(QueueUrl=settings.queue_url, AttributeNames=["All"])

    plain = _sent_user_agents(sqs, "sqs.GetQueueAttributes", two_calls)
    assert len(plain) == 2 and all(sent == built for sent, built in plain)
    assert plain[0][0] == plain[1][0]

    def add_feature(**_: object) -> None:
        register_feature_id("WAITER")  # "B": no call of ours uses a waiter

    event = "before-parameter-build.sqs.GetQueueAttributes"
    sqs.meta.events.register(event, add_feature)
    try:
        featured = _sent_user_agents(sqs, "sqs.GetQueueAttributes", two_calls)
    finally:
        sqs.meta.events.unregister(event, add_feature)
    assert all(sent == built for sent, built in featured)
    assert featured[0][0] != plain[0][0]
