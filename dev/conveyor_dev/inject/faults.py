"""Faults at the AWS boundary: what AWS does on a bad day, injected into botocore's own send
path so that its retries, timeouts, the breaker and Conveyor's error handling all see them as
they would see the real thing.

Armed by `CONVEYOR_AWS_FAULTS` (read once at import, like the failpoints), or in-process by
`armed(spec)`. Nothing in a deployed stack sets it; unset, each AWS request pays one function
call that finds no rules. A bad spec fails start-up with a message naming the rule.

Syntax: rules separated by `;`, each `<service>.<Operation>=<kind> [option=value ...]`.
`<service>` is botocore's service id (`dynamodb`, `sqs`, `secrets-manager`) and `<Operation>`
the API name (`PutItem`, `ReceiveMessage`); either may be an fnmatch pattern (`*`, `Transact*`).

| kind     | what the caller sees                                                               |
|----------|------------------------------------------------------------------------------------|
| hang     | the call blocks for `seconds` (default: until the rule's window closes); when that |
|          | outlasts the client's read timeout it fails with ReadTimeoutError at the timeout,  |
|          | as a hung socket does (botocore then retries, and each retry hangs again)          |
| throttle | HTTP 400 ProvisionedThroughputExceededException (DynamoDB), RequestThrottled (SQS) |
| error    | HTTP 500 InternalServerError (DynamoDB), InternalFailure (SQS)                     |
| reset    | the connection is reset before the request reaches AWS (ConnectionClosedError)     |
| lost     | the request is really sent and lands, then its response is lost                    |
|          | (ConnectionClosedError): botocore retries a write that was already applied         |
| conflict | TransactWriteItems cancelled with TransactionConflict on its first item, the rest  |
|          | `None`; any other operation gets TransactionConflictException. Nothing is written  |
| down     | nothing answers: EndpointConnectionError, the request never leaves                 |

Options (all optional): `after=S` the window opens S seconds after arming (default 0);
`for=S` it stays open S seconds (default: for good); `skip=N` the first N matching calls in
the window go through untouched (to hit, say, a task's second transaction); `count=N` at most
N calls are hit after that;
`p=F` a call in the window is hit with probability F (default 1); `while=PATH` the rule is
live only while PATH exists, so a test or the soak can open and close an outage from outside
the process; `seconds=S` (hang only) how long each call blocks.

Examples:
    dynamodb.*=hang for=25                 every DynamoDB call hangs for the first 25 s
    dynamodb.*=throttle while=/tmp/t       DynamoDB throttles while /tmp/t exists
    dynamodb.PutItem=lost count=1          the first PutItem lands, its response is lost
    sqs.*=down; dynamodb.*=error p=0.1     SQS is down, 10% of DynamoDB calls fail with 500
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.client import BaseClient
from botocore.exceptions import (
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.httpsession import URLLib3Session

log = logging.getLogger("conveyor_dev.inject.faults")
ENV_VAR = "CONVEYOR_AWS_FAULTS"
KINDS = ("hang", "throttle", "error", "reset", "lost", "conflict", "down")
_OPTIONS = {
    "after": float,
    "for": float,
    "skip": int,
    "count": int,
    "p": float,
    "while": str,
    "seconds": float,
}
_POLL_SECONDS = 0.05

# (HTTP status, error code) per kind and service; the JSON 1.0 protocol both services speak.
_ERRORS = {
    ("throttle", "dynamodb"): (400, "ProvisionedThroughputExceededException"),
    ("throttle", "sqs"): (400, "RequestThrottled"),
    ("error", "dynamodb"): (500, "InternalServerError"),
    ("error", "sqs"): (500, "InternalFailure"),
    ("throttle", "*"): (400, "ThrottlingException"),
    ("error", "*"): (500, "InternalFailure"),
}
_ERROR_NAMESPACE = {"dynamodb": "com.amazonaws.dynamodb.v20120810", "sqs": "com.amazonaws.sqs"}


@dataclass
class Rule:
    service: str
    operation: str
    kind: str
    after: float = 0.0
    duration: float | None = None
    skip: int = 0
    count: int | None = None
    p: float = 1.0
    while_path: str | None = None
    seconds: float | None = None
    text: str = ""
    seen: int = 0
    hits: int = 0

    def window_open(self, elapsed: float) -> bool:
        if elapsed < self.after:
            return False
        if self.duration is not None and elapsed >= self.after + self.duration:
            return False
        return self.while_path is None or os.path.exists(self.while_path)

    def matches(self, service: str, operation: str) -> bool:
        return fnmatch.fnmatchcase(service, self.service) and fnmatch.fnmatchcase(
            operation, self.operation
        )


@dataclass
class Plan:
    rules: list[Rule]
    armed_at: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def elapsed(self) -> float:
        return time.monotonic() - self.armed_at

    def pick(self, service: str, operation: str) -> Rule | None:
        """The first rule that hits this call now (counting it against the rule's `count`)."""
        elapsed = self.elapsed()
        for rule in self.rules:
            if not rule.matches(service, operation) or not rule.window_open(elapsed):
                continue
            with self._lock:
                rule.seen += 1
                if rule.seen <= rule.skip:
                    continue
                if rule.count is not None and rule.hits >= rule.count:
                    continue
                if rule.p < 1.0 and random.random() >= rule.p:
                    continue
                rule.hits += 1
            return rule
        return None


def parse(spec: str) -> list[Rule]:
    """Rules from a CONVEYOR_AWS_FAULTS value; ValueError naming the rule on any mistake."""
    rules = []
    for text in filter(None, (part.strip() for part in spec.split(";"))):
        target, sep, rest = text.partition("=")
        service, dot, operation = target.strip().partition(".")
        words = rest.split()
        if not sep or not dot or not service or not operation or not words:
            raise ValueError(f"AWS fault {text!r}: expected '<service>.<Operation>=<kind> ...'")
        kind, options = words[0], words[1:]
        if kind not in KINDS:
            raise ValueError(f"AWS fault {text!r}: unknown kind {kind!r} (known: {KINDS})")
        rule = Rule(service, operation, kind, text=text)
        for option in options:
            _apply_option(rule, option, text)
        rules.append(rule)
    return rules


def _apply_option(rule: Rule, option: str, text: str) -> None:
    name, sep, raw = option.partition("=")
    if not sep or name not in _OPTIONS:
        raise ValueError(f"AWS fault {text!r}: bad option {option!r} (known: {list(_OPTIONS)})")
    if name == "seconds" and rule.kind != "hang":
        raise ValueError(f"AWS fault {text!r}: 'seconds' applies to hang only")
    try:
        value = _OPTIONS[name](raw)
    except ValueError:
        raise ValueError(f"AWS fault {text!r}: {name}={raw!r} is not a number") from None
    if (isinstance(value, int | float) and value < 0) or (name == "p" and float(value) > 1):
        raise ValueError(f"AWS fault {text!r}: {name}={raw!r} is out of range")
    attribute = {"for": "duration", "while": "while_path"}.get(name, name)
    setattr(rule, attribute, value)


_PLAN = Plan(parse(os.environ.get(ENV_VAR, "")))


@contextmanager
def armed(spec: str) -> Iterator[Plan]:
    """Arm `spec` in this process for the block (windows count from entering it)."""
    global _PLAN
    previous, _PLAN = _PLAN, Plan(parse(spec))
    try:
        yield _PLAN
    finally:
        _PLAN = previous


def install(client: BaseClient) -> None:
    """Route every request of `client` past the armed rules (a no-op call while none are)."""
    config = client.meta.config
    injector = _Injector(float(config.read_timeout), float(config.connect_timeout))
    client.meta.events.register("before-send", injector.before_send)


class _Body:
    """The raw stream an AWSResponse reads its content from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


class _Injector:
    def __init__(self, read_timeout: float, connect_timeout: float) -> None:
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._session: URLLib3Session | None = None

    def before_send(
        self, request: AWSPreparedRequest, event_name: str, **_: Any
    ) -> AWSResponse | None:
        plan = _PLAN
        if not plan.rules:
            return None
        service, operation = event_name.split(".", 2)[1:]
        rule = plan.pick(service, operation)
        if rule is None:
            return None
        log.info("injecting an AWS fault", extra={"rule": rule.text, "operation": operation})
        if rule.kind == "hang":
            self._hang(rule, plan, request)
            return None
        if rule.kind == "reset":
            raise ConnectionClosedError(endpoint_url=request.url)
        if rule.kind == "down":
            raise EndpointConnectionError(endpoint_url=request.url)
        if rule.kind == "lost":
            self._send_for_real(request)
            raise ConnectionClosedError(endpoint_url=request.url)
        if rule.kind == "conflict":
            return _conflict(service, operation, request)
        status, code = _ERRORS.get((rule.kind, service)) or _ERRORS[(rule.kind, "*")]
        return _error(request, service, status, code, f"injected by {ENV_VAR}: {rule.text}")

    def _hang(self, rule: Rule, plan: Plan, request: AWSPreparedRequest) -> None:
        """Block until the hang ends (then the request goes through) or the read timeout."""
        started = time.monotonic()
        until = started + rule.seconds if rule.seconds is not None else float("inf")
        timeout_at = started + self._read_timeout
        while True:
            now = time.monotonic()
            if now >= until or (rule.seconds is None and not rule.window_open(plan.elapsed())):
                return
            if now >= timeout_at:
                raise ReadTimeoutError(endpoint_url=request.url)
            time.sleep(min(_POLL_SECONDS, until - now, timeout_at - now))

    def _send_for_real(self, request: AWSPreparedRequest) -> None:
        if self._session is None:
            self._session = URLLib3Session(timeout=(self._connect_timeout, self._read_timeout))
        response = self._session.send(request)
        _ = response.content  # read to the end: the write has landed


def _error(
    request: AWSPreparedRequest, service: str, status: int, code: str, message: str, **extra: Any
) -> AWSResponse:
    namespace = _ERROR_NAMESPACE.get(service, service)
    body = json.dumps({"__type": f"{namespace}#{code}", "message": message, **extra})
    headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "injected"}
    return AWSResponse(request.url, status, headers, _Body(body.encode()))


def _conflict(service: str, operation: str, request: AWSPreparedRequest) -> AWSResponse:
    message = f"injected by {ENV_VAR}: transaction conflict"
    if operation != "TransactWriteItems":
        return _error(request, service, 400, "TransactionConflictException", message)
    body = request.body if isinstance(request.body, bytes | str) else b"{}"
    items = len(json.loads(body or b"{}").get("TransactItems", [])) or 1
    reasons = [{"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}]
    reasons += [{"Code": "None"}] * (items - 1)
    return _error(
        request, service, 400, "TransactionCanceledException", message, CancellationReasons=reasons
    )
