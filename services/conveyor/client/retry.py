"""When a call is tried again: UNAVAILABLE (the API or its store could not serve it just now)
after a jittered exponential pause, and RESOURCE_EXHAUSTED (over the tenant's quota) after the
server's `retry-after`; never past the call's deadline, which covers every attempt.

Only calls that are safe to repeat go through here, and every call of this API is: a submit
carries the same idempotency key each attempt (a repeat returns the task the first created),
reads change nothing, and cancelling a cancelled task is a no-op. A new RPC that is not
idempotent must not use it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import grpc
import tenacity

from conveyor.client.errors import ConveyorError

RETRIED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` at most per call; UNAVAILABLE pauses grow from `initial` to at most `cap`
    seconds (full jitter)."""

    attempts: int = 5
    initial: float = 0.1
    cap: float = 2.0

    def pause(self, retry_state: tenacity.RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, ConveyorError) and error.retry_after is not None:
            return error.retry_after
        jitter = tenacity.wait_random_exponential(multiplier=self.initial, max=self.cap)
        return float(jitter(retry_state))

    def tenacity_args(self, deadline: float | None) -> dict[str, Any]:
        """Arguments for tenacity.Retrying/AsyncRetrying for a call that must end by
        `deadline` (time.monotonic(); None: no deadline)."""
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(self.attempts)
        if deadline is not None:
            stop = stop | _stop_if_pause_passes(deadline, self.pause)
        return {
            "retry": tenacity.retry_if_exception(_retried),
            "wait": self.pause,
            "stop": stop,
            "reraise": True,
        }


DEFAULT_RETRY = RetryPolicy()


def _retried(error: BaseException) -> bool:
    return isinstance(error, ConveyorError) and error.code in RETRIED


class _stop_if_pause_passes(tenacity.stop.stop_base):
    """Stop when the pause before the next attempt would end past the deadline: the caller
    gets the last error at once instead of a DEADLINE_EXCEEDED after a useless wait."""

    def __init__(self, deadline: float, pause: Any) -> None:
        self.deadline = deadline
        self.pause = pause

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return time.monotonic() + self.pause(retry_state) >= self.deadline
