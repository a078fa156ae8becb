"""Demo handlers for the local run and the tests (CONVEYOR_HANDLERS selects the registry)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conveyor.worker.handlers import Handler, PermanentError, TaskContext


def _params(ctx: TaskContext) -> dict[str, float]:
    try:
        value = json.loads(ctx.task.payload or b"{}")
    except ValueError as exc:
        raise PermanentError(f"payload is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise PermanentError("payload must be a JSON object")
    return value


def sleep(ctx: TaskContext) -> bytes:
    """Works for `seconds` (default 0.1), honouring cancellation, and applies its effect once:
    after the work, or before it with `effect_first` (so a crash lands between effect and
    completion, the case the effect ledger exists for)."""
    params = _params(ctx)
    seconds = float(params.get("seconds", 0.1))
    applied = ctx.apply_once("slept") if params.get("effect_first") else None
    ctx.wait(seconds)
    if applied is None:
        applied = ctx.apply_once("slept")
    return json.dumps({"slept": seconds, "applied_now": applied}).encode()


def flaky(ctx: TaskContext) -> bytes:
    """Fails transiently on its first `fail_times` attempts (default 2), then succeeds."""
    fail_times = int(_params(ctx).get("fail_times", 2))
    if ctx.attempt <= fail_times:
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


def charge(ctx: TaskContext) -> bytes:
    """An external effect that cannot join the ledger's transaction (handlers.py explains the
    pattern): record it first, then call downstream with the task's idempotency key, on every
    attempt. `fail_after_commit` fails the first attempt between the two steps."""
    params = _params(ctx)
    directory = os.environ.get(DOWNSTREAM_DIR)
    if not directory:
        raise PermanentError(f"demo.charge needs {DOWNSTREAM_DIR}, its downstream's directory")
    ctx.apply_once("charge")
    if params.get("fail_after_commit") and ctx.attempt == 1:
        raise RuntimeError("failed after recording the charge, before making it")
    charged_now = _downstream_charge(
        Path(directory), ctx.idempotency_key("charge"), float(params.get("amount", 1.0))
    )
    return json.dumps({"charged_now": charged_now}).encode()


def noop(ctx: TaskContext) -> bytes:
    """Does nothing: what `make bench` measures is Conveyor's own cost per task."""
    return b""


def poison(ctx: TaskContext) -> bytes:
    """Always fails with a retryable error, so the task exhausts its attempts and dies."""
    raise RuntimeError("poison task: this handler always fails")


def reject(ctx: TaskContext) -> bytes:
    """Fails permanently: the task ends FAILED on its first attempt."""
    raise PermanentError("rejected by the demo handler")


HANDLERS: dict[str, Handler] = {
    "demo.sleep": sleep,
    "demo.flaky": flaky,
    "demo.noop": noop,
    "demo.poison": poison,
    "demo.reject": reject,
    "demo.charge": charge,
}
