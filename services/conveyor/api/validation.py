"""Request validation. Every check names the offending field; nothing is stored on failure."""

from __future__ import annotations

from conveyor import domain
from conveyor.domain import TaskState
from conveyor.v1 import task_service_pb2 as pb


class InvalidArgument(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def task_id(value: str, field: str = "task_id") -> str:
    if not domain.TASK_ID_RE.fullmatch(value):
        raise InvalidArgument(field, "must be 32 lowercase hex characters")
    return value


def task_type(value: str, field: str = "task_type") -> str:
    if not domain.TASK_TYPE_RE.fullmatch(value):
        raise InvalidArgument(
            field, f"must match {domain.TASK_TYPE_RE.pattern} (lowercase, at most 64 characters)"
        )
    return value


def submit(req: pb.SubmitTaskRequest, default_max_attempts: int) -> int:
    """Validates a SubmitTaskRequest; returns the effective max_attempts."""
    task_type(req.task_type)
    if len(req.payload) > domain.MAX_PAYLOAD_BYTES:
        raise InvalidArgument(
            "payload", f"is {len(req.payload)} bytes; the limit is {domain.MAX_PAYLOAD_BYTES}"
        )
    if not domain.IDEMPOTENCY_KEY_RE.fullmatch(req.idempotency_key):
        raise InvalidArgument(
            "idempotency_key", f"is required and must match {domain.IDEMPOTENCY_KEY_RE.pattern}"
        )
    if req.max_attempts > domain.MAX_ATTEMPTS_LIMIT:
        raise InvalidArgument(
            "max_attempts", f"is {req.max_attempts}; the limit is {domain.MAX_ATTEMPTS_LIMIT}"
        )
    return req.max_attempts or default_max_attempts


def state_filter(value: int) -> TaskState | None:
    if value == pb.TASK_STATE_UNSPECIFIED:
        return None
    try:
        return TaskState(pb.TaskState.Name(value).removeprefix("TASK_STATE_"))
    except ValueError:
        raise InvalidArgument("state", f"unknown state {value}") from None


def list_request(req: pb.ListTasksRequest) -> tuple[TaskState | None, str | None, int]:
    state = state_filter(req.state)
    if req.task_type:
        task_type(req.task_type)
    if req.page_size > domain.MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"is {req.page_size}; at most {domain.MAX_PAGE_SIZE}")
    return state, req.task_type or None, req.page_size or 25


def cancel(req: pb.CancelTaskRequest) -> None:
    task_id(req.task_id)
    if len(req.reason) > domain.MAX_REASON_CHARS:
        raise InvalidArgument("reason", f"is longer than {domain.MAX_REASON_CHARS} characters")
