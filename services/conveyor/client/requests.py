"""Building requests, shared by the sync and asyncio clients: what a submit sends."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from conveyor.v1 import task_service_pb2 as pb

Payload = bytes | dict[str, Any] | list[Any] | BaseModel | None


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


def submit_request(
    task: str | BaseModel,
    payload: Payload,
    idempotency_key: str | None,
    max_attempts: int | None,
) -> pb.SubmitTaskRequest:
    """`task` is a type name (with `payload`) or a payload model instance whose declared type
    (conveyor.tasks.registry) names it. Without a key, a fresh one: made once per submit, so
    every retry of it carries the same."""
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
    )


def is_terminal(task: pb.Task) -> bool:
    return task.state in (
        pb.TASK_STATE_SUCCEEDED,
        pb.TASK_STATE_FAILED,
        pb.TASK_STATE_DEAD,
        pb.TASK_STATE_CANCELLED,
    )
