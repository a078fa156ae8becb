"""The DynamoDB circuit breaker (`conveyor.aws.make_breaker` + `guarded`): calls through it run
concurrently, it opens on dependency faults only, and half-open admits one trial call.

Real threads and real blocking calls; a barrier proves calls overlap (a breaker that runs them
one at a time cannot get N callers past an N-party barrier). Which errors count is tested with
real DynamoDB clients: the fault injector's faults, and answers from a loopback HTTP endpoint
in DynamoDB's wire format, which botocore parses, retries and raises as it would AWS's own.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pybreaker
import pytest
from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, SSLError
from conveyor.aws import AwsClients, guarded, make_breaker
from conveyor.settings import AwsSettings
from conveyor_dev.inject import faults

PARALLEL = 8
SLOW_CALL_SECONDS = 0.5


def _breaker(**overrides: object) -> pybreaker.CircuitBreaker:
    settings = AwsSettings(
        AWS_REGION="us-east-1",
        **{"breaker_failure_threshold": 3, "breaker_reset_seconds": 60, **overrides},
    )
    return make_breaker(settings, f"dep-{uuid.uuid4().hex[:6]}")


def _fault() -> None:
    raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")


def test_parallel_slow_calls_take_about_one_calls_time():
    breaker = _breaker()
    barrier = threading.Barrier(PARALLEL)

    def slow_call() -> float:
        barrier.wait(timeout=5 * SLOW_CALL_SECONDS)  # BrokenBarrierError if calls serialise
        time.sleep(SLOW_CALL_SECONDS)
        return SLOW_CALL_SECONDS

    started = time.monotonic()
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(lambda _: guarded(breaker, slow_call), range(PARALLEL)))
    elapsed = time.monotonic() - started
    assert results == [SLOW_CALL_SECONDS] * PARALLEL
    # Serialised, this is PARALLEL x 0.5 s = 4 s; concurrent, one call's time plus overhead.
    assert elapsed < 2 * SLOW_CALL_SECONDS, f"{PARALLEL} parallel calls took {elapsed:.2f}s"


def test_a_hung_call_does_not_block_other_callers():
    breaker = _breaker()
    release = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        hung = pool.submit(guarded, breaker, release.wait, timeout=10)
        time.sleep(0.05)  # let it enter the breaker
        started = time.monotonic()
        assert guarded(breaker, lambda: "answered") == "answered"
        assert time.monotonic() - started < 0.5
        release.set()
        assert hung.result(timeout=5) is True


def test_opens_on_dependency_faults_only_and_then_fails_fast():
    breaker = _breaker()
    answer = ClientError({"Error": {"Code": "ConditionalCheckFailedException"}}, "PutItem")

    def not_a_fault() -> None:
        raise answer

    for _ in range(5):
        with pytest.raises(ClientError):
            guarded(breaker, not_a_fault)
    assert (breaker.current_state, breaker.fail_counter) == ("closed", 0)

    for _ in range(2):
        with pytest.raises(EndpointConnectionError):
            guarded(breaker, _fault)
    with pytest.raises(pybreaker.CircuitBreakerError):
        guarded(breaker, _fault)  # the third fault trips it
    assert breaker.current_state == "open"
    calls = []
    with pytest.raises(pybreaker.CircuitBreakerError):
        guarded(breaker, lambda: calls.append(1))
    assert calls == []  # open: the call is not even made


def test_half_open_admits_one_trial_call_and_closes_on_its_success():
    breaker = _breaker(breaker_reset_seconds=0.2)
    for _ in range(3):
        with pytest.raises((EndpointConnectionError, pybreaker.CircuitBreakerError)):
            guarded(breaker, _fault)
    assert breaker.current_state == "open"
    time.sleep(0.25)  # the reset timeout itself is what is under test

    in_trial, release = threading.Event(), threading.Event()

    def trial() -> str:
        in_trial.set()
        release.wait(5)
        return "ok"

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(guarded, breaker, trial)
        assert in_trial.wait(5)
        assert breaker.current_state == "half-open"
        others = []
        with pytest.raises(pybreaker.CircuitBreakerError):
            guarded(breaker, lambda: others.append(1))
        assert others == []  # a second caller is turned away while the trial runs
        release.set()
        assert first.result(timeout=5) == "ok"
    assert breaker.current_state == "closed"
    assert guarded(breaker, lambda: "through") == "through"


def test_a_failed_trial_reopens_and_a_later_trial_can_close():
    breaker = _breaker(breaker_reset_seconds=0.2)
    for _ in range(3):
        with pytest.raises((EndpointConnectionError, pybreaker.CircuitBreakerError)):
            guarded(breaker, _fault)
    time.sleep(0.25)
    with pytest.raises(pybreaker.CircuitBreakerError):
        guarded(breaker, _fault)  # the trial fails: open again at once
    assert breaker.current_state == "open"
    with pytest.raises(pybreaker.CircuitBreakerError):
        guarded(breaker, lambda: "too soon")
    time.sleep(0.25)
    assert guarded(breaker, lambda: "recovered") == "recovered"
    assert breaker.current_state == "closed"


# ---- which errors count: real botocore errors from real clients ----

FAIL_MAX = 3
TABLE = "breaker-probe"
_DYNAMODB = "com.amazonaws.dynamodb.v20120810"


Answer = tuple[int, str, bytes]  # HTTP status, content type, body


class _Endpoint(ThreadingHTTPServer):
    """A loopback HTTP server that answers every request with its current `answer`."""

    answer: Answer = (200, "application/x-amz-json-1.0", b"{}")

    class Handler(BaseHTTPRequestHandler):
        server: _Endpoint

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, content_type, body = self.server.answer
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass


@pytest.fixture(scope="module")
def endpoint() -> Iterator[_Endpoint]:
    server = _Endpoint(("127.0.0.1", 0), _Endpoint.Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test credentials and nothing else of the caller's AWS environment."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "breaker-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "breaker-test")


@pytest.fixture
def dynamodb(endpoint: _Endpoint, aws_env: None) -> BaseClient:
    """A DynamoDB client made as the services make theirs (AwsClients), aimed at `endpoint`,
    with two attempts and a short read timeout so that retries and hangs are quick."""
    settings = AwsSettings(
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{endpoint.server_address[1]}",
        aws_max_attempts=2,
        aws_read_timeout_seconds=0.2,
        aws_connect_timeout_seconds=0.2,
    )
    return AwsClients(settings).client("dynamodb")


def _answer(status: int, code: str | None, **fields: Any) -> Answer:
    """An answer in DynamoDB's JSON protocol (`code` None: a body without an error type)."""
    body: dict[str, Any] = {"message": "answered by the test endpoint", **fields}
    if code is not None:
        body["__type"] = code if "#" in code else f"{_DYNAMODB}#{code}"
    return status, "application/x-amz-json-1.0", json.dumps(body).encode()


def _cancelled(*reasons: str) -> Answer:
    return _answer(
        400,
        "TransactionCanceledException",
        CancellationReasons=[{"Code": reason} for reason in reasons],
    )


def _html(status: int, text: str) -> Answer:
    """What a load balancer or proxy in front of the service answers: not AWS's JSON at all."""
    return status, "text/html", f"<html><body><h1>{status} {text}</h1></body></html>".encode()


def _transact(client: BaseClient) -> Any:
    item = {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "a"}, "sk": {"S": "b"}}}}
    return client.transact_write_items(TransactItems=[item, item], ClientRequestToken="token")


def _put(client: BaseClient) -> Any:
    return client.put_item(
        TableName=TABLE,
        Item={"pk": {"S": "a"}, "sk": {"S": "b"}},
        ConditionExpression="attribute_not_exists(pk)",
    )


def _in_a_row(
    endpoint: _Endpoint,
    client: BaseClient,
    how: Answer | str,
    call: Callable[[BaseClient], Any],
) -> tuple[pybreaker.CircuitBreaker, list[BaseException]]:
    """FAIL_MAX + 1 calls in a row through a fresh breaker, each failing as `how` says (an
    answer for `endpoint` to give, or a fault spec to arm in conveyor_dev.inject.faults); the
    breaker and what each call raised."""
    breaker = _breaker(breaker_failure_threshold=FAIL_MAX)
    raised: list[BaseException] = []
    arming: AbstractContextManager[Any] = nullcontext()
    if isinstance(how, str):
        arming = faults.armed(how)
    else:
        endpoint.answer = how
    with arming:
        for _ in range(FAIL_MAX + 1):
            with pytest.raises((ClientError, BotoCoreError, pybreaker.CircuitBreakerError)) as err:
                guarded(breaker, call, client=client)
            raised.append(err.value)
    return breaker, raised


@pytest.mark.parametrize(
    ("how", "call"),
    [
        pytest.param("dynamodb.TransactWriteItems=conflict", _transact, id="conflict"),
        pytest.param(_cancelled("None", "ConditionalCheckFailed"), _transact, id="cancelled-ccf"),
        pytest.param(
            _cancelled("TransactionConflict", "ConditionalCheckFailed"),
            _transact,
            id="cancelled-conflict-and-ccf",
        ),
        pytest.param(_cancelled("ValidationError", "None"), _transact, id="cancelled-invalid"),
        pytest.param("dynamodb.PutItem=conflict", _put, id="conflict-exception"),
        pytest.param(_answer(400, "ConditionalCheckFailedException"), _put, id="ccf"),
        pytest.param(
            _answer(400, "IdempotentParameterMismatchException"),
            _transact,
            id="idempotent-mismatch",
        ),
        pytest.param(
            _answer(400, "TransactionInProgressException"), _transact, id="token-in-progress"
        ),
        pytest.param(
            _answer(400, "com.amazon.coral.validate#ValidationException"), _put, id="validation"
        ),
        pytest.param(_answer(400, "ResourceNotFoundException"), _put, id="no-such-table"),
    ],
)
def test_answers_of_a_working_dependency_never_open_the_breaker(endpoint, dynamodb, how, call):
    breaker, raised = _in_a_row(endpoint, dynamodb, how, call)
    assert all(isinstance(exc, ClientError) for exc in raised), raised  # never the breaker's
    assert (breaker.current_state, breaker.fail_counter) == ("closed", 0)


@pytest.mark.parametrize(
    ("how", "call"),
    [
        pytest.param("dynamodb.TransactWriteItems=throttle", _transact, id="throttle"),
        pytest.param(_cancelled("ThrottlingError", "None"), _transact, id="cancelled-throttled"),
        pytest.param("dynamodb.PutItem=error", _put, id="internal-server-error"),
        pytest.param(_answer(503, "ServiceUnavailable"), _put, id="service-unavailable"),
        pytest.param(_html(503, "Service Unavailable"), _transact, id="503-from-a-proxy"),
        pytest.param(_html(502, "Bad Gateway"), _put, id="502-from-a-proxy"),
        pytest.param(_answer(500, None), _transact, id="500-without-an-error-type"),
        pytest.param("dynamodb.*=down", _put, id="connection-refused"),
        pytest.param("dynamodb.*=reset", _transact, id="connection-reset"),
        pytest.param("dynamodb.*=hang", _put, id="read-timeout"),
    ],
)
def test_throttling_server_faults_and_transport_errors_open_the_breaker(
    endpoint, dynamodb, how, call
):
    breaker, raised = _in_a_row(endpoint, dynamodb, how, call)
    assert breaker.current_state == "open"
    assert not any(isinstance(e, pybreaker.CircuitBreakerError) for e in raised[: FAIL_MAX - 1])
    assert all(isinstance(e, pybreaker.CircuitBreakerError) for e in raised[FAIL_MAX - 1 :])


def test_a_tls_failure_is_a_transport_fault(endpoint, aws_env):
    """TLS to an endpoint that does not speak it: botocore's SSLError, a ConnectionError that
    is none of the connection errors botocore's own names suggest."""
    settings = AwsSettings(
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"https://127.0.0.1:{endpoint.server_address[1]}",
        aws_max_attempts=1,
    )
    client = AwsClients(settings).client("dynamodb")
    breaker, raised = _in_a_row(endpoint, client, _answer(200, None), _put)
    assert isinstance(raised[0], SSLError)
    assert breaker.current_state == "open"
