"""The outside oracle: executions and effects counted in a file the store knows nothing of.

The chaos tests and the soak run their workers with `worker_env(sink)`: the handler here
appends one JSON line to the sink file when an execution starts (`execution`), when
`apply_once` tells it that it decided the effect (`decided`), and for every call it makes to
its downstream (`effect`, with the idempotency key). Each line is one write(2) on an O_APPEND
descriptor: lines of concurrent workers never interleave, and a SIGKILL leaves whole lines only.
Counting those lines is the proof; the effect ledger in DynamoDB, written by the system itself,
proves nothing (it is keyed and conditional, so it can never hold two).

The handler follows the pattern of conveyor.worker.handlers for an effect that cannot join the
ledger's transaction: `apply_once` first, then the downstream call with the task's idempotency
key on every attempt that gets that far. The sink plays a downstream that deduplicates by key,
as payment APIs do: the effect is applied by the first call with a key, and repeats are
counted (they are the at-least-once delivery showing) but change nothing. So, per task:

- `applied`: 1 when the downstream got a call, else 0. A SUCCEEDED task must have 1; a
  CANCELLED one must have 0 (cancellation promises no effect).
- a duplicate effect: two `decided` lines (apply_once said "you recorded it" twice), or calls
  under two different keys. Either would make a real downstream apply it twice.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.settings import env_name
from conveyor.tasks.registry import task
from conveyor.worker.handlers import PermanentError, TaskContext
from pydantic import BaseModel, Field

from conveyor_dev.local import demo_handlers

SINK_VAR = "CONVEYOR_ORACLE_SINK"
TASK_TYPE = "oracle.work"
EFFECT = "oracle-effect"

_fd: int | None = None
_fd_lock = threading.Lock()


def _sink_path() -> str:
    path = os.environ.get(SINK_VAR)
    if not path:
        raise PermanentError(f"{SINK_VAR} is not set: the oracle handler has nowhere to record")
    return path


def record(kind: str, ctx: TaskContext, **extra: str) -> None:
    global _fd
    with _fd_lock:
        if _fd is None:
            _fd = os.open(_sink_path(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    line = {
        "kind": kind,
        "task_id": ctx.task.task_id,
        "attempt": ctx.attempt,
        "worker": os.environ.get("CONVEYOR_WORKER_ID", ""),
        "pid": os.getpid(),
        "at": time.time(),
        # The key the handler was given (a schedule's slot is in it): the soak counts firings.
        "task_key": ctx.task.idempotency_key,
        **extra,
    }
    os.write(_fd, (json.dumps(line) + "\n").encode())


def worker_env(sink: Path) -> dict[str, str]:
    """The environment that makes a system run these handlers (and the demo's) and record
    into `sink`."""
    modules = ",".join((demo_handlers.__name__, __name__))
    return {env_name("task_modules"): modules, SINK_VAR: str(sink)}


class Work(BaseModel):
    fail_executions: int = Field(default=0, ge=0)
    seconds: float = Field(default=0.2, ge=0)
    effect_first: bool = False


@task(TASK_TYPE, payload=Work)
def work(ctx: TaskContext, params: Work) -> bytes:
    """Records its execution, fails while this task has had at most `fail_executions`
    executions (counted in the sink, so attempts reset by a redrive do not matter), works for
    `seconds` and applies its effect: after the work, or before it with `effect_first` (so
    that a crash lands between the effect and the completion)."""
    record("execution", ctx)
    if read(Path(_sink_path())).executions[ctx.task.task_id] <= params.fail_executions:
        raise RuntimeError("oracle.work: failing this execution as asked")
    decided = _effect(ctx) if params.effect_first else None
    ctx.wait(params.seconds)
    if decided is None:
        decided = _effect(ctx)
    return json.dumps({"applied_now": decided}).encode()


def _effect(ctx: TaskContext) -> bool:
    decided = ctx.apply_once(EFFECT)
    if decided:
        record("decided", ctx)
    record("effect", ctx, key=ctx.idempotency_key(EFFECT))
    return decided


@dataclass
class Observed:
    """What the sink saw, per task id."""

    executions: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    keys: dict[str, set[str]] = field(default_factory=dict)
    first_effect_at: dict[str, float] = field(default_factory=dict)
    task_keys: dict[str, str] = field(default_factory=dict)  # task id -> its idempotency key
    lines: list[dict[str, Any]] = field(default_factory=list)

    def applied(self, task_id: str) -> int:
        """How often the deduplicating downstream applied the task's effect: 0 or 1 per key."""
        return len(self.keys.get(task_id, ()))

    def duplicate_effects(self) -> dict[str, str]:
        """Tasks whose effect a real downstream would apply twice, and why."""
        found = {t: f"decided {n} times" for t, n in self.decisions.items() if n > 1}
        found.update(
            (t, f"called under keys {sorted(k)}") for t, k in self.keys.items() if len(k) > 1
        )
        return found

    def duplicate_executions(self) -> dict[str, int]:
        return {task: n for task, n in self.executions.items() if n > 1}

    def of(self, task_id: str, kind: str) -> list[dict[str, Any]]:
        """The sink's lines of one kind for one task, in the order they were written."""
        return [line for line in self.lines if line["task_id"] == task_id and line["kind"] == kind]

    def summary(self, task_ids: list[str]) -> str:
        runs = [self.executions[i] for i in task_ids]
        applied = [self.applied(i) for i in task_ids]
        repeats = sum(self.calls[i] - self.applied(i) for i in task_ids)
        duplicates = self.duplicate_effects()
        return (
            f"{len(task_ids)} tasks: {sum(runs)} executions ({sum(n > 1 for n in runs)} tasks "
            f"ran more than once, at most {max(runs, default=0)} times); {sum(applied)} effects "
            f"applied, {sum(i in duplicates for i in task_ids)} duplicated, "
            f"{sum(n == 0 for n in applied)} tasks without one; {repeats} repeated downstream "
            "calls absorbed by the idempotency key"
        )


def read(path: Path) -> Observed:
    observed = Observed()
    if not path.exists():
        return observed
    for line in path.read_text().splitlines():
        entry: dict[str, Any] = json.loads(line)
        observed.lines.append(entry)
        task_id, kind = entry["task_id"], entry["kind"]
        observed.task_keys.setdefault(task_id, entry.get("task_key", ""))
        if kind == "execution":
            observed.executions[task_id] += 1
        elif kind == "decided":
            observed.decisions[task_id] += 1
        else:
            observed.calls[task_id] += 1
            observed.keys.setdefault(task_id, set()).add(entry["key"])
            observed.first_effect_at.setdefault(task_id, float(entry["at"]))
    return observed
