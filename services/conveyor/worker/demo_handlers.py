"""Demo handlers for the local run and the tests (CONVEYOR_HANDLERS selects the registry)."""

from __future__ import annotations

import json

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
    applied = (
        ctx.apply_once(f"slept on attempt {ctx.attempt}") if params.get("effect_first") else None
    )
    ctx.wait(seconds)
    if applied is None:
        applied = ctx.apply_once(f"slept on attempt {ctx.attempt}")
    return json.dumps({"slept": seconds, "applied_now": applied}).encode()


def flaky(ctx: TaskContext) -> bytes:
    """Fails transiently on its first `fail_times` attempts (default 2), then succeeds."""
    fail_times = int(_params(ctx).get("fail_times", 2))
    if ctx.attempt <= fail_times:
        raise RuntimeError(f"transient failure on attempt {ctx.attempt} of the demo")
    ctx.apply_once("flaky-done")
    return b'{"ok": true}'


def poison(ctx: TaskContext) -> bytes:
    """Always fails with a retryable error, so the task exhausts its attempts and dies."""
    raise RuntimeError("poison task: this handler always fails")


def reject(ctx: TaskContext) -> bytes:
    """Fails permanently: the task ends FAILED on its first attempt."""
    raise PermanentError("rejected by the demo handler")


HANDLERS: dict[str, Handler] = {
    "demo.sleep": sleep,
    "demo.flaky": flaky,
    "demo.poison": poison,
    "demo.reject": reject,
}
