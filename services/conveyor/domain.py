"""Task states, the legal transitions between them, and the limits on client input.

This module is the single definition of the state machine (DESIGN.md §1): the store builds its
conditional writes from `ALLOWED`, and the API validates requests with the limits below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum


class TaskState(StrEnum):
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    DEAD = "DEAD"
    CANCELLED = "CANCELLED"
    # Not started by its start_by: it never ran and never will (a freshness failure).
    EXPIRED = "EXPIRED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.DEAD,
        TaskState.CANCELLED,
        TaskState.EXPIRED,
    }
)
NON_TERMINAL = frozenset(TaskState) - TERMINAL

# to_state -> the states it may be reached from.
ALLOWED: dict[TaskState, frozenset[TaskState]] = {
    # DEAD -> PENDING is the operator's DLQ redrive (`conveyor dlq redrive`), the one way out of
    # a terminal state: a fixed bug or recovered dependency deserves another run of the task.
    # It goes through PENDING with an outbox mark, so a redrive that dies before its send is
    # finished by the relay instead of leaving the task QUEUED with no message.
    TaskState.PENDING: frozenset({TaskState.DEAD}),
    TaskState.QUEUED: frozenset({TaskState.PENDING, TaskState.RUNNING}),
    TaskState.RUNNING: frozenset({TaskState.QUEUED, TaskState.RUNNING}),
    TaskState.SUCCEEDED: frozenset({TaskState.RUNNING}),
    TaskState.FAILED: frozenset({TaskState.RUNNING}),
    # A task can die while RUNNING (last attempt failed) or on re-delivery after a worker died
    # during its last attempt (state still RUNNING, lease expired) or, via the DLQ compensator,
    # from any non-terminal state.
    TaskState.DEAD: NON_TERMINAL,
    TaskState.CANCELLED: NON_TERMINAL,
    # Only a task never started expires: the relay meets it due (PENDING) or a worker receives
    # it (QUEUED, attempts 0) after its start_by. A claim starts it; from then on it may retry.
    TaskState.EXPIRED: frozenset({TaskState.PENDING, TaskState.QUEUED}),
}


class IllegalTransition(Exception):
    def __init__(self, task_id: str, current: TaskState, target: TaskState) -> None:
        super().__init__(f"task {task_id}: {current} -> {target} is not allowed")
        self.task_id = task_id
        self.current = current
        self.target = target


def check_transition(task_id: str, current: TaskState, target: TaskState) -> None:
    if current not in ALLOWED.get(target, frozenset()):
        raise IllegalTransition(task_id, current, target)


# ---- limits on client input (documented in README "API limits") ----
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_RESULT_BYTES = 64 * 1024  # a larger handler result fails the task (DynamoDB items: 400 KB)
MAX_ERROR_CHARS = 4096  # a task's last_error is cut to this, keeping the item far below 400 KB
TASK_TYPE_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
IDEMPOTENCY_KEY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
TASK_ID_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_ATTEMPTS_LIMIT = 20
# The queue's redrive policy moves a message to the DLQ on its receive after this many. SQS's
# redrive is the safety net for a worker that crashes on a task again and again, so it sits a
# few receives above the most attempts a task may ask for (the worker dead-letters first).
REDRIVE_MARGIN = 5
MAX_RECEIVE_COUNT = MAX_ATTEMPTS_LIMIT + REDRIVE_MARGIN
MAX_REASON_CHARS = 256
# A task's history lives inside its item, which every transition rewrites and DynamoDB bills by
# size: it keeps the latest events (seq numbers keep counting, so the gap shows what was dropped)
# and each event's detail is cut; the full last error is the task's last_error.
MAX_HISTORY_EVENTS = 64
MAX_EVENT_DETAIL_CHARS = 512
# Heartbeat intervals that must fit into the visibility timeout and into the lease: an extension
# lands within one interval of its beat (its calls are cut to fit), and one beat may fail.
HEARTBEATS_PER_TIMEOUT = 3
EFFECT_NAME_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}$")
MAX_PAGE_SIZE = 100
# How far ahead a submit's not_before (and start_by) may lie: a year and a day, so "same date
# next year" always fits.
MAX_DELAY_SECONDS = 366 * 24 * 3600
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Priority lanes, the one definition (README "Priority lanes"): each has its own SQS FIFO queue
# and DLQ (the Pulumi program declares a pair per lane, settings read a URL pair per lane), and
# workers drain them in this order, first lane first, without starving the later ones
# (conveyor.worker.lanes). A submit names its lane; none is DEFAULT_LANE, whose queues keep
# the names they had before lanes existed.
LANES: tuple[str, ...] = ("high", "default")
DEFAULT_LANE = "default"


def lane_suffix(lane: str, sep: str = "_") -> str:
    """What `lane` adds to the names of its queues, settings, stack outputs and resources:
    nothing for the default lane (its names are those from before lanes, so existing stacks
    keep their queues and deployments their variables), `<sep><lane>` for every other one."""
    if lane not in LANES:
        raise ValueError(f"{lane!r} is not a lane (lanes: {', '.join(LANES)})")
    return "" if lane == DEFAULT_LANE else f"{sep}{lane}"


def bounded_error(text: str) -> str:
    """`text` cut to MAX_ERROR_CHARS, saying so: an exception message may be any size, and
    an item over DynamoDB's 400 KB would make the outcome itself impossible to record."""
    if len(text) <= MAX_ERROR_CHARS:
        return text
    marker = f"... [{len(text)} characters, truncated]"
    return text[: MAX_ERROR_CHARS - len(marker)] + marker


@dataclass(frozen=True)
class TaskEvent:
    seq: int
    from_state: TaskState | None
    to_state: TaskState
    at_ms: int
    attempt: int
    detail: str = ""


@dataclass(frozen=True)
class Task:
    task_id: str
    tenant: str
    task_type: str
    payload: bytes
    state: TaskState
    version: int
    attempts: int
    max_attempts: int
    created_at_ms: int
    updated_at_ms: int
    idempotency_key: str
    last_error: str = ""
    result: bytes = b""
    lease_owner: str = ""
    lease_expires_at_ms: int = 0
    event_seq: int = 0
    traceparent: str = ""  # the submitter's W3C trace context, so a relayed send keeps the trace
    effects_applied: int = 0  # effects its handler recorded (TaskContext.apply_once)
    not_before_ms: int = 0  # a delayed task's due time: PENDING until then, 0 = at once
    start_by_ms: int = 0  # its deadline to start: EXPIRED if not claimed by then, 0 = none
    lane: str = DEFAULT_LANE  # its priority lane (LANES): which queue and DLQ carry it
    events: tuple[TaskEvent, ...] = field(default=())

    def expired_at(self, now_ms: int) -> bool:
        """Whether the task, never started (no attempt counted, no effect recorded, never
        RUNNING: a hand-back or give-back refunds the attempt of a run that did start, and a
        redrive resets them), is past its start_by at `now_ms`."""
        return (
            bool(self.start_by_ms)
            and now_ms > self.start_by_ms
            and self.attempts == 0
            and not self.effects_applied
            and not any(e.to_state == TaskState.RUNNING for e in self.events)
        )
