"""AWS clients: botocore's standard retry mode, timeouts cut from the caller's deadline, a
request counter on every call, and the circuit breaker that guards DynamoDB.

Retries are botocore's (standard mode: exponential backoff with jitter, throttling-aware retry
quota), not ours. A client is cached per (service, timeout bucket): creating a client per
request would be slow, and a handful of buckets lets a call never outlive its gRPC deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
import pybreaker
from botocore.client import BaseClient
from botocore.config import Config
from botocore.context import get_context
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from conveyor.settings import AwsSettings
from conveyor.telemetry import metrics

T = TypeVar("T")

# Per-attempt read timeouts a deadline-bound call may get, in seconds.
TIMEOUT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)

THROTTLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "RequestThrottled",
        "ThrottledException",
    }
)
TRANSACTION_THROTTLE_REASONS = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded"})
# No usable answer: botocore's two roots cover refused, reset and timed-out connections, TLS and
# proxy failures, and responses cut off mid-stream.
TRANSPORT_ERRORS = (HTTPClientError, BotocoreConnectionError)


class DeadlineTooShort(Exception):
    """The caller's remaining time cannot cover even the shortest AWS call."""


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def cancellation_reasons(exc: BaseException) -> frozenset[str]:
    """The reason codes of a cancelled DynamoDB transaction (empty for any other error)."""
    if error_code(exc) != "TransactionCanceledException":
        return frozenset()
    reasons = exc.response.get("CancellationReasons", [])  # type: ignore[attr-defined]
    return frozenset(str(r.get("Code")) for r in reasons if r.get("Code") not in (None, "None"))


def is_dependency_fault(exc: BaseException) -> bool:
    """Throttling, server faults and transport errors: what should trip the breaker.

    A server fault is any 5xx, whatever its code: a proxy's or load balancer's 502/503 carries
    no AWS error code (botocore names it "503"). Every 4xx that is not throttling is the
    dependency answering (a failed condition, a transaction cancelled by a conflict or a
    condition, a validation or idempotency error): it says nothing about the dependency's health.
    """
    if isinstance(exc, TRANSPORT_ERRORS):
        return True
    if not isinstance(exc, ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    throttled_transaction = bool(cancellation_reasons(exc) & TRANSACTION_THROTTLE_REASONS)
    server_fault = isinstance(status, int) and status >= 500
    return server_fault or error_code(exc) in THROTTLE_CODES or throttled_transaction


class _BreakerGauge(pybreaker.CircuitBreakerListener):
    def __init__(self, dependency: str) -> None:
        self._dependency = dependency

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        name = getattr(new_state, "name", str(new_state))
        metrics.circuit_breaker_state.labels(self._dependency).set(
            metrics.CIRCUIT_STATE_VALUES.get(name, 0)
        )


class _OneTrialWhenHalfOpen(pybreaker.CircuitBreakerListener):
    """Half-open lets one trial call through at a time; the others fail fast.

    pybreaker gets this for free from holding its lock across the call (every other caller
    waits for the trial's verdict). Without that lock, its half-open state would admit every
    concurrent call to a dependency that may still be down. pybreaker calls a listener's
    `before_call` under its lock, after the state's own check, and lets an exception from it
    abort the call before anything is sent; a state change (the trial's verdict) or a success
    frees the slot again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trial_in_flight = False

    def before_call(
        self, cb: pybreaker.CircuitBreaker, func: Any, *args: Any, **kwargs: Any
    ) -> None:
        if cb.current_state != pybreaker.STATE_HALF_OPEN:
            return
        with self._lock:
            if self._trial_in_flight:
                raise pybreaker.CircuitBreakerError("half-open: a trial call is in flight")
            self._trial_in_flight = True

    def _free(self) -> None:
        with self._lock:
            self._trial_in_flight = False

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        self._free()

    def success(self, cb: pybreaker.CircuitBreaker) -> None:
        self._free()


def make_breaker(settings: AwsSettings, dependency: str) -> pybreaker.CircuitBreaker:
    """A breaker that only counts dependency faults: a failed condition check is an answer.
    Call through it with `guarded`, never its own `call`."""
    metrics.circuit_breaker_state.labels(dependency).set(0)
    return pybreaker.CircuitBreaker(
        fail_max=settings.breaker_failure_threshold,
        reset_timeout=settings.breaker_reset_seconds,
        exclude=[lambda exc: not is_dependency_fault(exc)],
        listeners=[_BreakerGauge(dependency), _OneTrialWhenHalfOpen()],
        name=dependency,
    )


def guarded(breaker: pybreaker.CircuitBreaker, func: Callable[..., T], **kwargs: Any) -> T:
    """`func(**kwargs)` through `breaker`, concurrently with every other call through it.

    pybreaker's `CircuitBreaker.call` runs the wrapped call inside `with self._lock` (an RLock
    per breaker), so every DynamoDB call of a process ran one at a time, and one hung call
    stalled every heartbeat (issue 8, defect 1). Its `calling()` context manager holds that
    lock only while `call` runs a no-op generator function: the state check, the open ->
    half-open move and the listeners' `before_call`. The block itself runs after the lock is
    released, and its verdict (`_handle_success` / `_handle_error`: counters, open on the
    threshold, close after a half-open trial) is booked when the block exits, taking the lock
    again only to change state. What the lock gave for free, one trial call at a time when
    half-open, is restored by `_OneTrialWhenHalfOpen`. The fault counter is now bumped by
    concurrent callers without a lock; the worst a lost update can do in a fault storm is
    trip the breaker one fault later. A fault that trips the breaker still surfaces as
    CircuitBreakerError, as with `call`.
    """
    with breaker.calling():
        return func(**kwargs)


def _on_call_start(model: Any, context: dict[str, Any], **_: Any) -> None:
    """The call's clock starts at botocore's first per-call event (`provide-client-params`),
    before it validates the parameters, resolves the endpoint and serializes the request:
    building the AWS request is part of making the AWS call, not of the caller's own work
    (`before-call`, where the clock used to start, comes only after all of that)."""
    context["conveyor_call"] = (
        model.service_model.service_name,
        model.name,
        time.monotonic(),
        time.thread_time(),
    )


_thread_aws_time = threading.local()


def aws_seconds_on_this_thread() -> float:
    """Seconds this thread has spent in AWS calls so far, from botocore building each request
    to its parsed response (retries and back-off included): the difference across a piece of
    work is that work's time making AWS calls."""
    return float(getattr(_thread_aws_time, "seconds", 0.0))


def aws_cpu_seconds_on_this_thread() -> float:
    """CPU seconds this thread has used inside AWS calls so far (building, signing, sending
    and parsing requests): what is left of a piece of work's CPU time is its own."""
    return float(getattr(_thread_aws_time, "cpu_seconds", 0.0))


def _record(context: dict[str, Any], outcome: str) -> None:
    service, operation, started, started_cpu = context["conveyor_call"]
    elapsed = time.monotonic() - started
    metrics.aws_requests_total.labels(service, operation, outcome).inc()
    metrics.aws_request_seconds.labels(service, operation).observe(elapsed)
    _thread_aws_time.seconds = aws_seconds_on_this_thread() + elapsed
    _thread_aws_time.cpu_seconds = (
        aws_cpu_seconds_on_this_thread() + time.thread_time() - started_cpu
    )


def _on_after_call(
    http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any
) -> None:
    code = str(parsed.get("Error", {}).get("Code", "")) if parsed else ""
    if getattr(http_response, "status_code", 200) < 300:
        _record(context, "success")
    else:
        _record(context, "throttled" if code in THROTTLE_CODES else "error")


def _on_after_call_error(context: dict[str, Any], **_: Any) -> None:
    _record(context, "error")


# More distinct feature sets than a client ever sees: past it, strings are built, not kept.
_USER_AGENTS_KEPT = 64


def _reuse_user_agent(client: BaseClient) -> None:
    """Build the client's User-Agent once per set of botocore features, not twice per call.

    botocore assembles the header from about a dozen components on every call, once when it
    builds the request and again just before signing (to add the features the call used),
    sanitizing each component each time: about 30 us a string, 60 us a call, 4-8% of the API's
    and the worker's CPU under load (issue 18's py-spy profile). Every component but the
    feature list is fixed when the client is created (platform, versions, config, app id), so
    the string is a function of the features: it is kept per feature set. If botocore's
    private layout differs (another version), the client is left as it is.
    """
    creator = getattr(client, "_user_agent_creator", None)
    build = getattr(creator, "to_string", None)
    if creator is None or not callable(build) or not hasattr(creator, "_client_features"):
        return
    kept: dict[frozenset[str], str] = {}

    def to_string(*args: Any, **kwargs: Any) -> str:
        if args or kwargs:  # a botocore that passes something: not what this was built for
            return str(build(*args, **kwargs))
        ctx = get_context()
        features = frozenset(creator._client_features or ()).union(
            ctx.features if ctx is not None else ()
        )
        ua = kept.get(features)
        if ua is None:
            ua = build()
            if len(kept) < _USER_AGENTS_KEPT:
                kept[features] = ua
        return ua

    # An instance attribute: both of botocore's calls (`self.to_string()` in the request-created
    # handler, `creator.to_string()` in `_convert_to_request_dict`) find it first.
    creator.to_string = to_string


# Called with every client this process creates: the seam a development harness attaches to
# (conveyor_dev.inject installs fault injection and the IAM action log here). The product
# registers nothing, and a deployed image holds none of that code.
_client_hooks: list[Callable[[BaseClient], None]] = []


def add_client_hook(hook: Callable[[BaseClient], None]) -> None:
    """Have `hook(client)` called for every AWS client created from now on."""
    _client_hooks.append(hook)


class AwsClients:
    """Thread-safe cache of instrumented boto3 clients."""

    def __init__(self, settings: AwsSettings) -> None:
        self._settings = settings
        self._session = boto3.session.Session(region_name=settings.aws_region)
        self._clients: dict[tuple[str, float, int], BaseClient] = {}
        self._lock = threading.Lock()

    @property
    def settings(self) -> AwsSettings:
        return self._settings

    def client(self, service: str, remaining: float | None = None) -> BaseClient:
        """A client whose worst case fits in `remaining` seconds, if given: every attempt's
        connect and read timeouts plus the throttling back-off botocore sleeps between them."""
        read_timeout = self._settings.aws_read_timeout_seconds
        attempts = self._settings.aws_max_attempts
        connect_timeout = self._settings.aws_connect_timeout_seconds
        if remaining is not None:
            read_timeout, attempts = self._fit(service, remaining)
            connect_timeout = min(connect_timeout, read_timeout)
        key = (service, read_timeout, attempts)
        with self._lock:
            cached = self._clients.get(key)
            if cached is None:
                cached = self._create(service, read_timeout, connect_timeout, attempts)
                self._clients[key] = cached
        return cached

    def _fit(self, service: str, remaining: float) -> tuple[float, int]:
        """The longest per-attempt timeout, with as many attempts as still fit, for `remaining`."""
        for attempts in range(self._settings.aws_max_attempts, 0, -1):
            # botocore's standard mode sleeps up to 1 s, 2 s, ... before throttled retries.
            backoff = 2 ** (attempts - 1) - 1
            per_attempt = (remaining - backoff) / (2 * attempts)  # connect + read, each <= it
            limit = min(per_attempt, self._settings.aws_read_timeout_seconds)
            fitting = [b for b in TIMEOUT_BUCKETS if b <= limit]
            if fitting:
                return fitting[-1], attempts
        raise DeadlineTooShort(f"{remaining:.3f}s left is too short for a {service} call")

    def _create(
        self, service: str, read_timeout: float, connect_timeout: float, attempts: int
    ) -> BaseClient:
        config = Config(
            # total_max_attempts: botocore's "max_attempts" counts retries, not attempts.
            retries={"mode": "standard", "total_max_attempts": attempts},
            # botocore's client-side check of every request against the service model was the
            # largest CPU cost of an API submit outside its HTTP exchange (issue 9's profile):
            # the requests are built by this code, tested on every tier, and AWS validates
            # them anyway (a bad one fails there with a ValidationException).
            parameter_validation=False,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=50,
            tcp_keepalive=True,
        )
        client = self._session.client(
            service, endpoint_url=self._settings.endpoint_for(service), config=config
        )
        _reuse_user_agent(client)
        events = client.meta.events
        events.register("provide-client-params", _on_call_start)
        events.register("after-call", _on_after_call)
        events.register("after-call-error", _on_after_call_error)
        for hook in _client_hooks:
            hook(client)
        return client
