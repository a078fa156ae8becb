"""The handler contract: what a task-type handler receives and how it reports failure.

A handler is `Callable[[TaskContext], bytes | str | None]`; the result is stored as bytes (a
str as UTF-8), at most 64 KiB, and any other type fails the task. Delivery is at-least-once,
so a handler must make its external effect idempotent: `TaskContext.apply_once` records the effect against
the task id with a conditional write, so a retry after a crash finds it applied and skips it.
Raise PermanentError for input that will never succeed (task ends FAILED); any other exception
is retried with backoff until the attempts run out (task ends DEAD).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from conveyor.domain import Task
from conveyor.store import TaskStore


class PermanentError(Exception):
    """The task cannot succeed however often it is retried."""


class TaskCancelled(Exception):
    """Raised by `TaskContext.check` when the task was cancelled (or the lease lost)."""


@dataclass
class TaskContext:
    task: Task
    attempt: int
    stop: threading.Event  # set when the task is cancelled or this worker lost its lease
    store: TaskStore

    def check(self) -> None:
        """Call between steps: raises TaskCancelled once the worker must stop this task."""
        if self.stop.is_set():
            raise TaskCancelled(self.task.task_id)

    def wait(self, seconds: float) -> None:
        """Sleep that wakes up (raising TaskCancelled) as soon as the task must stop."""
        if self.stop.wait(seconds):
            raise TaskCancelled(self.task.task_id)

    def apply_once(self, effect: str) -> bool:
        """Record this task's effect exactly once; False when an earlier attempt applied it."""
        return self.store.record_effect(self.task.task_id, effect)


Handler = Callable[[TaskContext], bytes | str | None]


def load_handlers(spec: str) -> Mapping[str, Handler]:
    """Load a `module:ATTRIBUTE` mapping of task type to handler."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"handler spec {spec!r} must look like 'package.module:NAME'")
    registry = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(registry, Mapping) or not all(callable(h) for h in registry.values()):
        raise ValueError(f"{spec} is not a mapping of task type to callable")
    return registry
