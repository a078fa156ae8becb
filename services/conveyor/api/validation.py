"""Request validation. Every check names the offending field; nothing is stored on failure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import ValidationError

from conveyor import domain
from conveyor.domain import TaskState
from conveyor.tasks.registry import TaskType
from conveyor.v1 import task_service_pb2 as pb


class InvalidArgument(Exception):
    """A bad request: its message names the field; `violations` lists every (field path,
    problem) for the status details (google.rpc.BadRequest)."""

    def __init__(
        self, field: str, problem: str, violations: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.violations = list(violations) or [(field, problem)]


def field_path(loc: Sequence[int | str]) -> str:
    """A pydantic error location as a field path under `payload`: payload.items[0].sku."""
    path = "payload"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def payload_fits(declared: TaskType, payload: bytes) -> None:
    """Raises InvalidArgument naming every field of `payload` that does not fit its model."""
    try:
        declared.payload.model_validate_json(payload)
    except ValidationError as exc:
        violations = [(field_path(e["loc"]), e["msg"]) for e in exc.errors()]
        listed = "; ".join(f"{path}: {problem}" for path, problem in violations)
        model = declared.payload.__qualname__
        raise InvalidArgument(
            "payload", f"does not fit {model} of {declared.type_name}: {listed}", violations
        ) from None


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


def submit(
    req: pb.SubmitTaskRequest, types: Mapping[str, TaskType], default_max_attempts: int
) -> int:
    """Validates a SubmitTaskRequest against the declared `types`; returns the effective
    max_attempts: the submit's, at most its type's ceiling; else the type's, else the default."""
    task_type(req.task_type)
    declared = types.get(req.task_type)
    if declared is None:
        known = ", ".join(sorted(types)) or "none"
        raise InvalidArgument(
            "task_type", f"{req.task_type!r} is not a declared task type (known: {known})"
        )
    if len(req.payload) > domain.MAX_PAYLOAD_BYTES:
        raise InvalidArgument(
            "payload", f"is {len(req.payload)} bytes; the limit is {domain.MAX_PAYLOAD_BYTES}"
        )
    if not domain.IDEMPOTENCY_KEY_RE.fullmatch(req.idempotency_key):
        raise InvalidArgument(
            "idempotency_key", f"is required and must match {domain.IDEMPOTENCY_KEY_RE.pattern}"
        )
    ceiling = declared.max_attempts or domain.MAX_ATTEMPTS_LIMIT
    if req.max_attempts > ceiling:
        whose = f"{declared.type_name}'s" if declared.max_attempts else "the"
        raise InvalidArgument("max_attempts", f"is {req.max_attempts}; {whose} limit is {ceiling}")
    payload_fits(declared, req.payload)
    return req.max_attempts or declared.max_attempts or default_max_attempts


def lane(req: pb.SubmitTaskRequest) -> str:
    """The submit's lane (domain.LANES; empty = the default lane)."""
    if not req.lane:
        return domain.DEFAULT_LANE
    if req.lane not in domain.LANES:
        raise InvalidArgument(
            "lane", f"{req.lane!r} is not a lane (lanes: {', '.join(domain.LANES)})"
        )
    return req.lane


def key_not_repeated(req: pb.SubmitTaskRequest, seen: Mapping[str, int]) -> None:
    """A batch's task whose key an earlier task of it has (`seen`: key -> its index)."""
    if req.idempotency_key in seen:
        raise InvalidArgument("idempotency_key", f"repeats tasks[{seen[req.idempotency_key]}]'s")


def sent_times(req: pb.SubmitTaskRequest) -> tuple[int, int]:
    """(not_before, start_by) as the client sent them, in ms, 0 when unset."""
    not_before = req.not_before.ToMilliseconds() if req.HasField("not_before") else 0
    start_by = req.start_by.ToMilliseconds() if req.HasField("start_by") else 0
    return not_before, start_by


def timing(req: pb.SubmitTaskRequest, now_ms: int) -> tuple[int, int]:
    """(not_before, start_by) of a submit in ms, 0 when unset. A not_before in the past means
    at once; a start_by must lie ahead and after not_before; both within MAX_DELAY_SECONDS."""
    horizon = now_ms + domain.MAX_DELAY_SECONDS * 1000
    not_before, start_by = sent_times(req)
    if not_before > horizon:
        raise InvalidArgument(
            "not_before", f"is more than {domain.MAX_DELAY_SECONDS // 86400} days ahead"
        )
    if start_by:
        if start_by <= max(now_ms, not_before):
            raise InvalidArgument("start_by", "must lie ahead, and after not_before")
        if start_by > horizon:
            raise InvalidArgument(
                "start_by", f"is more than {domain.MAX_DELAY_SECONDS // 86400} days ahead"
            )
    return max(0, not_before), start_by


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
