"""Demo task types for the local run and the tests, declared as a fork declares its own
(CONVEYOR_TASK_MODULES names this module)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conveyor.tasks.registry import task
from conveyor.worker.handlers import PermanentError, TaskContext
from pydantic import BaseModel, Field


class Sleep(BaseModel):
    seconds: float = Field(default=0.1, ge=0)
    effect_first: bool = False


class Slept(BaseModel):
    slept: float
    applied_now: bool


@task("demo.sleep", payload=Sleep)
def sleep(ctx: TaskContext, params: Sleep) -> Slept:
    """Works for `seconds`, honouring cancellation, and applies its effect once: after the
    work, or before it with `effect_first` (so a crash lands between effect and completion,
    the case the effect ledger exists for)."""
    applied = ctx.apply_once("slept") if params.effect_first else None
    ctx.wait(params.seconds)
    if applied is None:
        applied = ctx.apply_once("slept")
    return Slept(slept=params.seconds, applied_now=applied)


class Flaky(BaseModel):
    fail_times: int = Field(default=2, ge=0)


@task("demo.flaky", payload=Flaky)
def flaky(ctx: TaskContext, params: Flaky) -> bytes:
    """Fails transiently on its first `fail_times` attempts, then succeeds."""
    if ctx.attempt <= params.fail_times:
        raise RuntimeError(f"transient failure on attempt {ctx.attempt} of the demo")
    ctx.apply_once("flaky-done")
    return b'{"ok": true}'


DOWNSTREAM_DIR = "CONVEYOR_DEMO_DOWNSTREAM_DIR"


def _downstream_charge(directory: Path, idempotency_key: str, amount: float) -> bool:
    """A stand-in for an external service that deduplicates by idempotency key (as payment
    APIs do): one file per key, created exclusively. False when the key was seen before."""
    try:
        fd = os.open(directory / idempotency_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        json.dump({"amount": amount}, out)
    return True


class Charge(BaseModel):
    amount: float = Field(default=1.0, gt=0)
    fail_after_commit: bool = False


class Charged(BaseModel):
    charged_now: bool


@task("demo.charge", payload=Charge)
def charge(ctx: TaskContext, params: Charge) -> Charged:
    """An external effect that cannot join the ledger's transaction (handlers.py explains the
    pattern): record it first, then call downstream with the task's idempotency key, on every
    attempt. `fail_after_commit` fails the first attempt between the two steps."""
    directory = os.environ.get(DOWNSTREAM_DIR)
    if not directory:
        raise PermanentError(f"demo.charge needs {DOWNSTREAM_DIR}, its downstream's directory")
    ctx.apply_once("charge")
    if params.fail_after_commit and ctx.attempt == 1:
        raise RuntimeError("failed after recording the charge, before making it")
    key = ctx.idempotency_key("charge")
    return Charged(charged_now=_downstream_charge(Path(directory), key, params.amount))


class NoParams(BaseModel):
    """A payload without parameters: any JSON object (its fields are ignored)."""


@task("demo.noop", payload=NoParams)
def noop(ctx: TaskContext, params: NoParams) -> bytes:
    """Does nothing: what `make bench` measures is Conveyor's own cost per task."""
    return b""


@task("demo.poison", payload=NoParams, max_attempts=3)
def poison(ctx: TaskContext, params: NoParams) -> bytes:
    """Always fails with a retryable error, so the task exhausts its attempts and dies."""
    raise RuntimeError("poison task: this handler always fails")


@task("demo.reject", payload=NoParams)
def reject(ctx: TaskContext, params: NoParams) -> bytes:
    """Fails permanently: the task ends FAILED on its first attempt."""
    raise PermanentError("rejected by the demo handler")
