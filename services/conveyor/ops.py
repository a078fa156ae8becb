"""Operator actions behind `conveyor dlq|outbox|queue`: they talk to AWS directly, with the
operator's credentials, because they must work when the API is the thing that is down."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tenacity

from conveyor import wiring
from conveyor.dlq_filter import ANY, DlqFilter
from conveyor.domain import DEFAULT_LANE, Task
from conveyor.queue import (
    DEAD_LETTER_QUEUES,
    MalformedMessage,
    Message,
    TaskQueue,
    parse,
    queue_of,
)
from conveyor.settings import AwsSettings, QueueSettings, StoreSettings, load
from conveyor.store import TaskStore, now_ms
from conveyor.tasks.lifecycle import Lifecycle


class OpsSettings(AwsSettings, StoreSettings, QueueSettings):
    pass


@dataclass(frozen=True)
class Ops:
    store: TaskStore
    queue: TaskQueue


@dataclass(frozen=True)
class DlqEntry:
    task_id: str
    task_type: str
    state: str
    attempts: int
    last_error: str
    message_id: str
    lane: str = DEFAULT_LANE  # whose DLQ holds it


@dataclass(frozen=True)
class RedriveResult:
    task_id: str
    outcome: str  # redriven | discarded | skipped | held | not-found
    detail: str


# A filtered look reads the whole DLQ (up to this many messages) to find `limit` that match.
FILTERED_SCAN_LIMIT = 10_000


@dataclass(frozen=True)
class OutboxStatus:
    pending: int
    oldest_age_seconds: float | None


def _dlq_depth(o: Ops) -> dict[str, int]:
    """Every lane's DLQ's counts, added up (visible, inflight, delayed)."""
    total: dict[str, int] = {}
    for dlq in DEAD_LETTER_QUEUES:
        for state, count in o.queue.depth(dlq).items():
            total[state] = total.get(state, 0) + count
    return total


def _peek_dlqs(o: Ops, limit: int, hold_seconds: int = 30) -> list[dict[str, Any]]:
    """Up to `limit` messages of the lanes' DLQs, lane by lane in LANES order, held for
    `hold_seconds` (each notes its DLQ: conveyor.queue.queue_of)."""
    raws: list[dict[str, Any]] = []
    for dlq in DEAD_LETTER_QUEUES:
        if len(raws) >= limit:
            break
        raws += o.queue.peek(limit - len(raws), queue=dlq, hold_seconds=hold_seconds)
    return raws


def from_env() -> Ops:
    deps = wiring.build(load(OpsSettings))
    return Ops(deps.store, deps.queue)


@dataclass(frozen=True)
class DlqListing:
    entries: list[DlqEntry]
    held_elsewhere: int  # DLQ messages another reader held, so not listed, when it gave up


# How long inspect and a redrive of named tasks wait for DLQ messages someone else holds: the
# relay's DLQ scan hides every message for the moment it looks at them, every sweep.
HELD_WAIT_SECONDS = 10.0


def _while_held(
    o: Ops,
    look: Callable[[], None],
    saw_all: Callable[[dict[str, int]], bool],
    wait_seconds: float,
) -> int:
    """Call `look` again every 0.5 s while `saw_all` (given the DLQ's counts after the look)
    says it did not see all it was after and some DLQ message was held by another reader
    before it looked or is held now, for up to `wait_seconds`. (Before, too: a hold that ends
    between the look and the count hid a message from the look and is gone from the count.)
    Returns how many were held if it gave up short (approximately: SQS counts them so),
    else 0."""

    def attempt() -> tuple[bool, int]:
        held_before = _dlq_depth(o)["inflight"]
        look()
        after = _dlq_depth(o)
        return saw_all(after), max(held_before, after["inflight"])

    saw, held = tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda result: not result[0] and result[1] > 0),
        stop=tenacity.stop_after_delay(wait_seconds),
        wait=tenacity.wait_fixed(0.5),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else (False, 0),
    )(attempt)
    return 0 if saw else held


def dlq_inspect(
    o: Ops,
    limit: int,
    held_wait_seconds: float = HELD_WAIT_SECONDS,
    where: DlqFilter = ANY,
) -> DlqListing:
    """Up to `limit` DLQ messages that `where` matches, with their tasks, left in the DLQ.
    While it finds fewer than that and has read fewer messages than the DLQ holds, another
    reader holds some: it looks again for up to `held_wait_seconds`, and says how many it
    could not read. (Comparing with the DLQ's total rather than its hidden count: SQS's counts
    lag, and its own look just hid them all.)"""
    entries: list[DlqEntry] = []
    read = [0]

    def look() -> None:
        entries[:], read[0] = _inspect_pass(o, limit, where)

    def saw_all(depth: dict[str, int]) -> bool:
        return len(entries) >= limit or read[0] >= depth["visible"] + depth["inflight"]

    return DlqListing(entries, _while_held(o, look, saw_all, held_wait_seconds))


def _inspect_pass(o: Ops, limit: int, where: DlqFilter) -> tuple[list[DlqEntry], int]:
    """The matching entries, and how many messages it read."""
    raws = _peek_dlqs(o, FILTERED_SCAN_LIMIT if where.narrows else limit)
    entries: list[DlqEntry] = []
    try:
        for raw in raws:
            if len(entries) >= limit:
                break
            try:
                message = parse(raw)
            except MalformedMessage as exc:
                entry = DlqEntry(
                    "?", "?", "MALFORMED", 0, str(exc), raw["MessageId"], queue_of(raw).lane
                )
            else:
                task = o.store.get(message.task_id)
                entry = DlqEntry(
                    message.task_id,
                    message.task_type,
                    task.state.value if task else "MISSING",
                    task.attempts if task else 0,
                    _last_error(task, message.error),
                    message.message_id,
                    message.queue.lane,
                )
            if where.matches(entry.task_type, entry.last_error):
                entries.append(entry)
    finally:
        o.queue.unhide(raws)
    return entries, len(raws)


def _last_error(task: Task | None, message_error: str) -> str:
    """The task's own last error; the DLQ message's when the task has none (or is gone)."""
    return (task.last_error if task else "") or message_error


# A redrive holds the DLQ messages it looks at for 30 s plus 2 s per task it means to redrive
# (never more than 15 minutes: the hold is also how long they stay hidden if it dies), and
# leaves a quarter of that unused: it acts on no receipt handle about to expire.
HOLD_MARGIN_FRACTION = 0.25


def redrive_hold_seconds(tasks: int) -> int:
    return min(900, 30 + 2 * tasks)


def dlq_redrive(
    o: Ops,
    task_ids: list[str] | None,
    limit: int,
    hold_seconds: int | None = None,
    held_wait_seconds: float = HELD_WAIT_SECONDS,
    where: DlqFilter = ANY,
) -> list[RedriveResult]:
    """Give DEAD tasks another run (Lifecycle.redrive: PENDING with attempts reset, enqueued,
    then their DLQ message goes).

    The DLQ messages are held (invisible) for `hold_seconds` (by default redrive_hold_seconds
    of the tasks asked for) while it works. Past three quarters of that it redrives no more
    (those are reported `skipped`: run it again), so it never acts on a receipt handle about
    to expire, and whatever it did not finish, an error included, is made visible again at
    once rather than when the hold ends.

    A named task whose message it does not see while the DLQ has hidden messages may be
    among them (the relay's DLQ scan, or an inspect or redrive that died, holds them): it
    looks again for up to `held_wait_seconds`, then reports the task `held`, not
    `not-found`. Only tasks that `where` matches are redriven; named ones it does not match
    are reported `skipped`."""
    if hold_seconds is None:
        hold_seconds = redrive_hold_seconds(limit if task_ids is None else len(task_ids))
    if task_ids is None:
        return _redrive_pass(o, None, limit, hold_seconds, where)
    missing = set(task_ids)
    results: list[RedriveResult] = []

    def look() -> None:
        results.extend(_redrive_pass(o, missing, limit, hold_seconds, where))
        missing.difference_update(r.task_id for r in results)

    held = _while_held(o, look, lambda _depth: not missing, held_wait_seconds)
    for task_id in sorted(missing):
        if held:
            detail = f"not seen; {held} DLQ message(s) are held by another reader; run again"
            results.append(RedriveResult(task_id, "held", detail))
        else:
            results.append(RedriveResult(task_id, "not-found", "no DLQ message for this task"))
    return results


def _redrive_pass(
    o: Ops, wanted: set[str] | None, limit: int, hold_seconds: int, where: DlqFilter
) -> list[RedriveResult]:
    """One look at the DLQ: redrive what it finds of `wanted` (or up to `limit` of any)."""
    tasks = Lifecycle(o.store, o.queue)
    started = time.monotonic()
    scan_all = wanted is not None or where.narrows
    raws = _peek_dlqs(o, FILTERED_SCAN_LIMIT if scan_all else limit, hold_seconds)
    stop_at = started + hold_seconds * (1 - HOLD_MARGIN_FRACTION)
    results: list[RedriveResult] = []
    give_back = list(raws)  # until each is finished with
    try:
        for raw in raws:
            try:
                message = parse(raw)
            except MalformedMessage:
                continue
            if wanted is not None and message.task_id not in wanted:
                continue
            if wanted is None and len(results) >= limit:
                continue
            if where.narrows and not _matches(o, where, message):
                if wanted is not None:
                    detail = "does not match the --type/--error filter"
                    results.append(RedriveResult(message.task_id, "skipped", detail))
                continue
            if time.monotonic() >= stop_at:
                results.append(
                    RedriveResult(message.task_id, "skipped", "the DLQ hold ran out; run again")
                )
                continue
            give_back.remove(raw)
            try:
                outcome, detail = tasks.redrive(
                    message.task_id, raw["ReceiptHandle"], message.queue
                )
                results.append(RedriveResult(message.task_id, outcome, detail))
            except Exception:
                give_back.append(raw)  # half done: the next redrive looks at it again
                raise
    finally:
        o.queue.unhide(give_back)
    return results


def _matches(o: Ops, where: DlqFilter, message: Message) -> bool:
    task = o.store.get(message.task_id) if where.error is not None else None
    return where.matches(message.task_type, _last_error(task, message.error))


def outbox_status(o: Ops) -> OutboxStatus:
    now = now_ms()
    marks = o.store.outbox_marks(now + 1, 1000)
    oldest = (now - marks[0].marked_at_ms) / 1000 if marks else None
    return OutboxStatus(len(marks), oldest)


def queue_stats(o: Ops) -> dict[str, dict[str, int]]:
    """Every lane's queue and DLQ by name: main and dlq for the default lane, <lane>/main
    and <lane>/dlq for the others."""
    return {str(queue): counts for queue, counts in o.queue.depths().items()}
