"""AwsClients and the circuit breaker: deadline-cut timeouts, request metrics, breaker trips on
dependency faults only and fails fast while open.

Dependency faults are real: a store pointed at a loopback port nobody listens on gets
connection refused, at once, on every attempt.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pybreaker
import pytest
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError
from conveyor.aws import TIMEOUT_BUCKETS, AwsClients, DeadlineTooShort, make_breaker
from conveyor.settings import AwsSettings, StoreSettings
from conveyor.store import TaskStore, now_ms
from store_support import claim, ddb_calls, metric, submit


class HangUp:
    """A loopback TCP server that accepts each connection and closes it without answering:
    every attempt is a ConnectionClosedError, and `accepted` counts the attempts."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture
def hang_up() -> Iterator[HangUp]:
    server = HangUp()
    yield server
    server.close()


class SlowProxy:
    """A loopback TCP proxy to the real backend that holds each response `delay` seconds: every
    DynamoDB call through it is slow, and still answered by the backend."""

    def __init__(self, upstream: str, delay: float) -> None:
        host, port = upstream.removeprefix("http://").rstrip("/").split(":")
        self._upstream = (host, int(port))
        self._delay = delay
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            conn.settimeout(None)
            upstream = socket.create_connection(self._upstream)
            asked = threading.Event()  # a request was forwarded; its response is not yet held
            threading.Thread(
                target=self._pipe, args=(conn, upstream, asked, False), daemon=True
            ).start()
            threading.Thread(
                target=self._pipe, args=(upstream, conn, asked, True), daemon=True
            ).start()

    def _pipe(
        self, src: socket.socket, dst: socket.socket, asked: threading.Event, response: bool
    ) -> None:
        try:
            while chunk := src.recv(65536):
                if response and asked.is_set():
                    asked.clear()
                    time.sleep(self._delay)  # once per response, however many chunks
                if not response:
                    asked.set()  # before forwarding: the answer may come back at once
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            dst.close()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()


def test_parallel_slow_store_calls_are_not_serialised(aws_backend, aws_credentials, settings):
    """Issue 8 defect 1: pybreaker's `call` held its lock across the request, so 8 threads
    making 0.5 s calls took 4 s. Through the store's breaker they now overlap."""
    delay, parallel = 0.5, 8
    proxy = SlowProxy(aws_backend.endpoint_for("dynamodb"), delay)
    try:
        slow = _settings(proxy.url, aws_read_timeout_seconds=5.0)
        store = TaskStore(AwsClients(slow), settings, make_breaker(slow, "dynamodb-slow"))
        started = time.monotonic()
        store.get(uuid.uuid4().hex)
        one_call = time.monotonic() - started
        started = time.monotonic()
        with ThreadPoolExecutor(parallel) as pool:
            found = list(pool.map(lambda _: store.get(uuid.uuid4().hex), range(parallel)))
        elapsed = time.monotonic() - started
    finally:
        proxy.close()
    assert found == [None] * parallel  # real answers from the backend
    assert one_call >= delay
    # One at a time this is 8 x 0.5 s = 4 s; overlapping, about one call's time.
    assert elapsed < one_call + delay, f"{parallel} parallel calls took {elapsed:.2f}s"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settings(endpoint: str, **overrides) -> AwsSettings:
    values = {
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        # Wins over a per-service variable of the backend's (aws_credentials sets them).
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
        "aws_max_attempts": 1,
        "aws_connect_timeout_seconds": 0.2,
        "aws_read_timeout_seconds": 0.5,
        "breaker_failure_threshold": 3,
        "breaker_reset_seconds": 60,
        **overrides,
    }
    return AwsSettings(**values)


def _gauge(dependency: str) -> float | None:
    return metric("conveyor_circuit_breaker_state", dependency=dependency)


@pytest.fixture
def dead_store(aws_credentials) -> tuple[TaskStore, pybreaker.CircuitBreaker, str]:
    settings = _settings(f"http://127.0.0.1:{_closed_port()}")
    dependency = f"dynamodb-{uuid.uuid4().hex[:6]}"
    breaker = make_breaker(settings, dependency)
    store = TaskStore(AwsClients(settings), StoreSettings(table_name="nowhere"), breaker)
    return store, breaker, dependency


def test_breaker_opens_after_n_faults_then_fails_fast(dead_store):
    store, breaker, dependency = dead_store
    assert (breaker.current_state, _gauge(dependency)) == ("closed", 0)
    errors = ddb_calls("Query", "error")

    for _ in range(2):
        with pytest.raises(EndpointConnectionError):
            store.get(uuid.uuid4().hex)
    assert breaker.current_state == "closed"
    with pytest.raises(pybreaker.CircuitBreakerError):
        store.get(uuid.uuid4().hex)  # the third fault trips it
    assert (breaker.current_state, _gauge(dependency)) == ("open", 2)
    assert ddb_calls("Query", "error") == errors + 3

    started = time.monotonic()
    for _ in range(20):
        with pytest.raises(pybreaker.CircuitBreakerError):
            store.get(uuid.uuid4().hex)
    assert time.monotonic() - started < 0.5
    assert ddb_calls("Query", "error") == errors + 3  # open: no request was even sent


def test_half_open_breaker_closes_after_a_success(aws_backend, aws_credentials, settings):
    """Faults on a dead endpoint open a shared breaker; after the reset timeout one good call
    through it (to the live backend) closes it again."""
    dependency = f"dynamodb-{uuid.uuid4().hex[:6]}"
    breaker = make_breaker(_settings("http://unused", breaker_reset_seconds=0.3), dependency)
    dead = TaskStore(AwsClients(_settings(f"http://127.0.0.1:{_closed_port()}")), settings, breaker)
    live_settings = _settings(aws_backend.endpoint_for("dynamodb"))
    live = TaskStore(AwsClients(live_settings), settings, breaker)
    for _ in range(3):
        with pytest.raises((EndpointConnectionError, pybreaker.CircuitBreakerError)):
            dead.get(uuid.uuid4().hex)
    assert breaker.current_state == "open"

    deadline = time.monotonic() + 5
    while True:
        try:
            assert live.get(uuid.uuid4().hex) is None
            break
        except pybreaker.CircuitBreakerError:
            assert time.monotonic() < deadline, "the breaker never let a trial call through"
            time.sleep(0.05)
    assert (breaker.current_state, _gauge(dependency)) == ("closed", 0)


def test_answers_that_are_not_faults_never_trip_the_breaker(settings, clients):
    dependency = f"dynamodb-{uuid.uuid4().hex[:6]}"
    breaker = make_breaker(_settings("http://unused", breaker_failure_threshold=2), dependency)
    store = TaskStore(clients, settings, breaker)
    task_id = uuid.uuid4().hex
    for _ in range(5):
        assert store.extend_lease(task_id, "w1", 0) is False  # ConditionalCheckFailed
    missing = TaskStore(clients, StoreSettings(table_name="no-such-table"), breaker)
    for _ in range(3):
        with pytest.raises(Exception, match="ResourceNotFound"):
            missing.get(task_id)  # a client error, not a dependency fault
    assert (breaker.current_state, breaker.fail_counter) == ("closed", 0)
    assert _gauge(dependency) == 0


def test_a_tiny_deadline_fails_fast_without_a_request(store):
    calls = ddb_calls("Query") + ddb_calls("Query", "error")
    with pytest.raises(DeadlineTooShort):
        store.get(uuid.uuid4().hex, remaining=0.01)
    with pytest.raises(DeadlineTooShort):
        store.submit(
            tenant="acme",
            task_type="t",
            payload=b"",
            idempotency_key="k",
            request_hash="h",
            max_attempts=1,
            remaining=0.09,  # not even one 50 ms connect + 50 ms read fits
        )
    assert ddb_calls("Query") + ddb_calls("Query", "error") == calls


@pytest.mark.parametrize(
    ("remaining", "configured", "read_timeout", "attempts"),
    [
        (None, 3, 5.0, 3),  # no deadline: the configured timeout and attempts
        (100.0, 3, 5.0, 3),  # a long deadline never raises the configured timeout
        (10.0, 3, 1.0, 3),  # (10 s - 3 s of throttling back-off) / 3 attempts / (connect+read)
        (3.0, 3, 0.5, 2),  # three attempts' back-off alone would take 3 s: two attempts
        (1.0, 3, 0.5, 1),  # one attempt, 0.5 s to connect and 0.5 s to read
        (0.16, 3, 0.05, 1),  # the shortest bucket
    ],
)
def test_timeouts_and_attempts_fit_the_deadline(remaining, configured, read_timeout, attempts):
    clients = AwsClients(
        _settings("http://unused", aws_max_attempts=configured, aws_read_timeout_seconds=5.0)
    )
    client = clients.client("dynamodb", remaining)
    config = client.meta.config
    assert config.read_timeout == read_timeout
    assert config.retries["total_max_attempts"] == attempts
    if remaining is not None:
        worst = attempts * (config.connect_timeout + config.read_timeout) + 2 ** (attempts - 1) - 1
        assert worst <= remaining
    assert read_timeout in (*TIMEOUT_BUCKETS, 5.0)
    assert clients.client("dynamodb", remaining) is client  # cached per bucket


@pytest.mark.parametrize("attempts", [1, 2])
def test_aws_max_attempts_is_the_total_number_of_attempts(aws_credentials, hang_up, attempts):
    settings = _settings(hang_up.url, aws_max_attempts=attempts)
    breaker = make_breaker(settings, f"dynamodb-{uuid.uuid4().hex[:6]}")
    store = TaskStore(AwsClients(settings), StoreSettings(table_name="nowhere"), breaker)
    with pytest.raises(ConnectionClosedError):
        store.get(uuid.uuid4().hex)
    assert hang_up.accepted == attempts


def test_deadline_too_short_names_the_service():
    clients = AwsClients(_settings("http://unused", aws_max_attempts=3))
    with pytest.raises(DeadlineTooShort, match="sqs"):
        clients.client("sqs", 0.05)


def test_request_counter_by_outcome(store):
    running = claim(store, submit(store), owner="w1")
    success, errors = ddb_calls("UpdateItem"), ddb_calls("UpdateItem", "error")
    store.extend_lease(running.task_id, "w1", now_ms() + 1000)
    store.extend_lease(running.task_id, "w2", 0)  # ConditionalCheckFailed: an error response
    store.extend_lease(running.task_id, "w2", 0)
    assert ddb_calls("UpdateItem") == success + 1
    assert ddb_calls("UpdateItem", "error") == errors + 2
    latency = metric(
        "conveyor_aws_request_seconds_count", service="dynamodb", operation="UpdateItem"
    )
    assert latency >= 3


def test_transport_errors_count_as_errors(dead_store):
    store, _, _ = dead_store
    errors = ddb_calls("Query", "error")
    with pytest.raises(EndpointConnectionError):
        store.get(uuid.uuid4().hex)
    assert ddb_calls("Query", "error") == errors + 1


def test_a_submit_is_one_transaction_and_no_read(store):
    """The idempotency key is checked by the transaction's condition, not by a read first."""
    reads = ddb_calls("GetItem") + ddb_calls("Query")
    transactions = ddb_calls("TransactWriteItems")
    submit(store)
    assert ddb_calls("GetItem") + ddb_calls("Query") == reads
    assert ddb_calls("TransactWriteItems") == transactions + 1
