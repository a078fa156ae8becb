"""Building requests, shared by the sync and asyncio clients: what a submit sends."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel

from conveyor.api.convert import TERMINAL_STATES
from conveyor.client.errors import ConveyorError
from conveyor.store import MAX_BATCH_TASKS
from conveyor.v1 import task_service_pb2 as pb

Payload = bytes | dict[str, Any] | list[Any] | BaseModel | None
Item = BaseModel | tuple[str, Payload]  # a payload model, or a type name and its payload
_CODES = {code.value[0]: code for code in grpc.StatusCode}


@dataclass(frozen=True)
class Submitted:
    task: pb.Task
    created: bool  # False: the idempotency key replayed an existing task


def payload_bytes(payload: Payload) -> bytes:
    """bytes as they are; a model as its JSON; a dict or list as compact JSON (so the same
    document always hashes the same for idempotency)."""
    if payload is None:
        return b""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, BaseModel):
        return payload.model_dump_json().encode()
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _timestamp(at: datetime | None) -> Timestamp | None:
    if at is None:
        return None
    if at.tzinfo is None:
        raise ValueError(f"{at!r} has no time zone: say which (e.g. datetime.now(UTC))")
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def submit_request(
    task: str | BaseModel,
    payload: Payload,
    idempotency_key: str | None,
    max_attempts: int | None,
    not_before: datetime | None = None,
    start_by: datetime | None = None,
    lane: str | None = None,
) -> pb.SubmitTaskRequest:
    """`task` is a type name (with `payload`) or a payload model instance whose declared type
    (conveyor.tasks.registry) names it. Without a key, a fresh one: made once per submit, so
    every retry of it carries the same. `not_before` delays the task until then; `start_by`
    is its deadline to start (else it ends EXPIRED): absolute, zone-aware times. `lane` is its
    priority lane ("high" or "default"; None = the default lane)."""
    if isinstance(task, BaseModel):
        if payload is not None:
            raise TypeError("submit(model) takes no separate payload")
        from conveyor.tasks.registry import type_for

        task_type, payload = type_for(task).type_name, task
    else:
        task_type = task
    return pb.SubmitTaskRequest(
        task_type=task_type,
        payload=payload_bytes(payload),
        idempotency_key=idempotency_key or str(uuid.uuid4()),
        max_attempts=max_attempts or 0,
        not_before=_timestamp(not_before),
        start_by=_timestamp(start_by),
        lane=lane or "",
    )


def schedule_request(
    name: str,
    cron: str,
    time_zone: str,
    task: str | BaseModel,
    payload: Payload = None,
    max_attempts: int | None = None,
) -> pb.CreateScheduleRequest:
    """A schedule submitting `task` (as submit_request takes it) at each slot of `cron`, a
    five-field spec (or six, seconds last) read in the IANA `time_zone`."""
    submit = submit_request(task, payload, "unused", max_attempts)
    return pb.CreateScheduleRequest(
        schedule=pb.Schedule(
            name=name,
            cron=cron,
            time_zone=time_zone,
            task_type=submit.task_type,
            payload=submit.payload,
            max_attempts=submit.max_attempts,
        )
    )


def is_terminal(task: pb.Task) -> bool:
    return task.state in TERMINAL_STATES


def batches(items: Iterable[Item], keys: Sequence[str] | None) -> Iterator[pb.SubmitTasksRequest]:
    """SubmitTasks requests of at most MAX_BATCH_TASKS, keys made once (so retries replay)."""
    items = list(items)
    if keys is not None and len(keys) != len(items):
        raise ValueError(f"{len(keys)} idempotency keys for {len(items)} tasks")
    given: Sequence[str | None] = keys if keys is not None else [None] * len(items)
    requests = [
        submit_request(item, None, key, None)
        if isinstance(item, BaseModel)
        else submit_request(item[0], item[1], key, None)
        for item, key in zip(items, given, strict=True)
    ]
    for start in range(0, len(requests), MAX_BATCH_TASKS):
        yield pb.SubmitTasksRequest(tasks=requests[start : start + MAX_BATCH_TASKS])


def batch_results(response: pb.SubmitTasksResponse) -> list[Submitted | ConveyorError]:
    """Each task's outcome, in request order: Submitted, or the error that refused it."""
    return [
        ConveyorError(_CODES.get(r.code, grpc.StatusCode.UNKNOWN), r.message)
        if r.outcome == pb.SUBMIT_OUTCOME_REFUSED
        else Submitted(r.task, r.outcome == pb.SUBMIT_OUTCOME_CREATED)
        for r in response.results
    ]
