"""The DynamoDB circuit breaker (`conveyor.aws.make_breaker` + `guarded`): calls through it run
concurrently, it still opens on dependency faults only, and half-open admits one trial call.

Real threads and real blocking calls; a barrier proves calls overlap (a breaker that runs them
one at a time cannot get N callers past an N-party barrier).
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pybreaker
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from conveyor.aws import guarded, make_breaker
from conveyor.settings import AwsSettings

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
