"""The handler contract: what a task-type handler receives and how it reports failure.

A handler is declared with `conveyor.tasks.registry.task` and called as `handler(ctx,
payload)`, the payload parsed into the type's model. Its result is stored as bytes (a pydantic
model as its JSON, a str as UTF-8), at most 64 KiB, and any other type fails the task. Raise
PermanentError (or an exception the type declares `permanent`) for input that will never
succeed (task ends FAILED); any other exception, and a run past the type's `timeout`, is
retried with backoff until the attempts run out (task ends DEAD).

Effects. Delivery is at-least-once and a worker can die at any point, so a handler can run
more than once for a task. `ctx.apply_once(name)` records the effect `name` in the task's
effect ledger, once per (task, effect name), fenced by this run's lease (a token unique to the
claim, so a re-run of a given-back attempt is a run of its own): it returns True to the run
that recorded it, False to any later run, and raises TaskCancelled (recording nothing) once the
task was cancelled or this run lost its lease. A task with a recorded
effect can no longer be cancelled (CancelTask answers FAILED_PRECONDITION), so CANCELLED always
means no effect was recorded, and none will be.

An effect that cannot join the ledger's transaction (a payment API, an e-mail, another
service) cannot be made atomic with it; make it idempotent downstream instead, with a key that
is the same on every attempt, `ctx.idempotency_key(name)`, and record it first:

    ctx.apply_once("charge")                    # decide: fenced, seen by CancelTask
    payments.charge(amount, idempotency_key=ctx.idempotency_key("charge"))  # then do

The ledger write commits the task to the effect; the call is then made on this attempt and on
any retry (whatever apply_once returned), and the downstream key collapses the repeats. The
other orders fail: ledger after the call can lose the ledger write (the call happened, then the
lease was lost or the task cancelled: CANCELLED with an effect), and skipping the call when
apply_once returns False loses the effect if the first call failed. `demo.charge` shows it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import tenacity

from conveyor import failpoints
from conveyor.domain import Task
from conveyor.store import LeaseLost
from conveyor.tasks.lifecycle import Lifecycle


class PermanentError(Exception):
    """The task cannot succeed however often it is retried."""


class TaskCancelled(Exception):
    """Raised by `TaskContext.check` when the task was cancelled (or the lease lost)."""


@dataclass
class TaskContext:
    task: Task
    attempt: int
    stop: threading.Event  # set when the task is cancelled or this worker lost its lease
    tasks: Lifecycle
    owner: str  # this run's lease token (unique per claim): what fences its effects
    # The worker's retries on dependency faults (throttling, 5xx, transport, an open breaker)
    # for as long as it holds the task's message: a brownout is not the handler's failure.
    retrying: Callable[[], tenacity.Retrying]

    def check(self) -> None:
        """Call between steps: raises TaskCancelled once the worker must stop this task."""
        if self.stop.is_set():
            raise TaskCancelled(self.task.task_id)

    def wait(self, seconds: float) -> None:
        """Sleep that wakes up (raising TaskCancelled) as soon as the task must stop."""
        failpoints.hit("worker.mid_handler")
        if self.stop.wait(seconds):
            raise TaskCancelled(self.task.task_id)

    def apply_once(self, effect: str) -> bool:
        """Record effect `effect` (a name, unique within the task) exactly once.

        True: this run recorded it (also when its first try's answer was lost). False: an
        earlier run did. Raises TaskCancelled when the task was cancelled or this run lost its
        lease meanwhile (taken over, or given up at its timeout): nothing is recorded then.
        Dependency faults are retried while the worker holds the task's message, so an attempt
        that outlived an AWS outage still records its effect instead of failing and running
        the handler again.
        """
        try:
            return self.retrying()(self.tasks.record_effect, self.task.task_id, effect, self.owner)
        except LeaseLost:
            self.stop.set()
            raise TaskCancelled(self.task.task_id) from None

    def idempotency_key(self, effect: str) -> str:
        """The key to hand downstream for `effect`: the same on every attempt of this task."""
        return f"{self.task.task_id}:{effect}"
