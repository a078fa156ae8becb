"""Domain objects to protobuf messages."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from conveyor.domain import TERMINAL, Task, TaskEvent, TaskState
from conveyor.v1 import task_service_pb2 as pb


def _ts(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def state(value: TaskState | None) -> int:
    if value is None:
        return pb.TASK_STATE_UNSPECIFIED
    return int(pb.TaskState.Value(f"TASK_STATE_{value.value}"))


TERMINAL_STATES = frozenset(state(s) for s in TERMINAL)


def task(t: Task) -> pb.Task:
    return pb.Task(
        task_id=t.task_id,
        task_type=t.task_type,
        payload=t.payload,
        state=state(t.state),  # type: ignore[arg-type]
        attempts=t.attempts,
        max_attempts=t.max_attempts,
        last_error=t.last_error,
        result=t.result,
        version=t.version,
        created_at=_ts(t.created_at_ms),
        updated_at=_ts(t.updated_at_ms),
        idempotency_key=t.idempotency_key,
        not_before=_ts(t.not_before_ms) if t.not_before_ms else None,
        start_by=_ts(t.start_by_ms) if t.start_by_ms else None,
        trace_id=trace_id(t.traceparent),
        lane=t.lane,
    )


def trace_id(traceparent: str) -> str:
    """The trace id of a W3C `traceparent` (version-traceid-spanid-flags); empty if none."""
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else ""


def event(e: TaskEvent) -> pb.TaskEvent:
    return pb.TaskEvent(
        seq=e.seq,
        from_state=state(e.from_state),  # type: ignore[arg-type]
        to_state=state(e.to_state),  # type: ignore[arg-type]
        at=_ts(e.at_ms),
        attempt=e.attempt,
        detail=e.detail,
    )
