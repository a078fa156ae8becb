"""The asyncio client: the same calls as conveyor.client.Client, awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import grpc
import tenacity
from grpc import aio
from pydantic import BaseModel

from conveyor.api.auth import channel_credentials, channel_options
from conveyor.client import settings as client_settings
from conveyor.client.errors import ConveyorError
from conveyor.client.requests import (
    Item,
    Payload,
    Submitted,
    batch_results,
    batches,
    is_terminal,
    schedule_request,
    submit_request,
)
from conveyor.client.retry import DEFAULT_RETRY, RetryPolicy
from conveyor.client.sync import DEFAULT_IDLE_SECONDS, DEFAULT_TIMEOUT_SECONDS
from conveyor.settings import TlsSettings
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc


def _error(exc: aio.AioRpcError) -> ConveyorError:
    return ConveyorError.from_rpc(exc.code(), exc.details() or "", exc.trailing_metadata())


class AsyncClient:
    """A Conveyor API client for asyncio; see conveyor.client.Client."""

    def __init__(
        self,
        address: str,
        tls: TlsSettings,
        server_name: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        idle_timeout: float = DEFAULT_IDLE_SECONDS,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self._channel = aio.secure_channel(
            address, channel_credentials(tls), options=channel_options(server_name)
        )
        self._stub = pb_grpc.TaskServiceStub(self._channel)
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.retry = retry

    @classmethod
    def from_env(cls, **options: Any) -> AsyncClient:
        config = client_settings.from_env()
        return cls(config.api_address, config, config.tls_server_name, **options)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def submit(
        self,
        task: str | BaseModel,
        payload: Payload = None,
        *,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        not_before: datetime | None = None,
        start_by: datetime | None = None,
        lane: str | None = None,
        timeout: float | None = None,
    ) -> Submitted:
        request = submit_request(
            task, payload, idempotency_key, max_attempts, not_before, start_by, lane
        )
        response = await self._unary(self._stub.SubmitTask, request, timeout)
        return Submitted(response.task, response.created)

    async def submit_many(
        self,
        tasks: Iterable[Item],
        *,
        idempotency_keys: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> list[Submitted | ConveyorError]:
        """As Client.submit_many."""
        results: list[Submitted | ConveyorError] = []
        for request in batches(tasks, idempotency_keys):
            results += batch_results(await self._unary(self._stub.SubmitTasks, request, timeout))
        return results

    async def get(
        self, task_id: str, *, timeout: float | None = None
    ) -> tuple[pb.Task, list[pb.TaskEvent]]:
        request = pb.GetTaskRequest(task_id=task_id)
        response = await self._unary(self._stub.GetTask, request, timeout)
        return response.task, list(response.events)

    async def cancel(
        self, task_id: str, reason: str = "", *, timeout: float | None = None
    ) -> pb.Task:
        request = pb.CancelTaskRequest(task_id=task_id, reason=reason)
        return (await self._unary(self._stub.CancelTask, request, timeout)).task

    def list(
        self,
        *,
        state: int = pb.TASK_STATE_UNSPECIFIED,
        task_type: str | None = None,
        limit: int = 0,
        include_payload: bool = False,
        idle_timeout: float | None = None,
    ) -> AsyncIterator[pb.Task]:
        request = pb.ListTasksRequest(
            state=state,  # type: ignore[arg-type]
            task_type=task_type or "",
            limit=limit,
            include_payload=include_payload,
        )
        idle = self.idle_timeout if idle_timeout is None else idle_timeout
        return self._stream(self._stub.ListTasks, request, idle, None)

    async def wait(
        self,
        task_id: str,
        *,
        timeout: float | None = None,
        on_change: Callable[[pb.Task], None] | None = None,
    ) -> pb.Task:
        deadline = None if timeout is None else time.monotonic() + timeout
        last: pb.Task | None = None
        request = pb.WatchTaskRequest(task_id=task_id)
        async for task in self._stream(self._stub.WatchTask, request, None, deadline):
            if on_change is not None:
                on_change(task)
            last = task
        if last is None or not is_terminal(last):
            raise ConveyorError(
                grpc.StatusCode.UNAVAILABLE,
                f"the watch of task {task_id} ended before a terminal state",
            )
        return last

    # ---- recurring schedules ----
    async def create_schedule(
        self,
        name: str,
        cron: str,
        time_zone: str,
        task: str | BaseModel,
        payload: Payload = None,
        *,
        max_attempts: int | None = None,
        timeout: float | None = None,
    ) -> tuple[pb.Schedule, bool]:
        """(the schedule, created): creating the same definition again answers it, unchanged."""
        request = schedule_request(name, cron, time_zone, task, payload, max_attempts)
        response = await self._unary(self._stub.CreateSchedule, request, timeout)
        return response.schedule, response.created

    async def list_schedules(self, *, timeout: float | None = None) -> tuple[pb.Schedule, ...]:
        request = pb.ListSchedulesRequest()
        return tuple((await self._unary(self._stub.ListSchedules, request, timeout)).schedules)

    async def pause_schedule(
        self, name: str, paused: bool = True, *, timeout: float | None = None
    ) -> pb.Schedule:
        """Pause, or resume with `paused=False` (from the next slot after now)."""
        request = pb.PauseScheduleRequest(name=name, paused=paused)
        return (await self._unary(self._stub.PauseSchedule, request, timeout)).schedule

    async def delete_schedule(self, name: str, *, timeout: float | None = None) -> bool:
        """True if it existed."""
        request = pb.DeleteScheduleRequest(name=name)
        return bool((await self._unary(self._stub.DeleteSchedule, request, timeout)).deleted)

    async def _unary(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        async for attempt in tenacity.AsyncRetrying(**self.retry.tenacity_args(deadline)):
            with attempt:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConveyorError(
                        grpc.StatusCode.DEADLINE_EXCEEDED, "the call's time ran out"
                    )
                try:
                    return await method(request, timeout=left)
                except aio.AioRpcError as exc:
                    raise _error(exc) from None
        raise AssertionError("tenacity neither returned nor raised")

    async def _stream(
        self,
        method: Callable[..., Any],
        request: Any,
        idle: float | None,
        deadline: float | None,
    ) -> AsyncIterator[Any]:
        """The stream's messages; it is opened again (a read: safe) only while none came."""
        call: Any = None
        first: Any = None
        async for attempt in tenacity.AsyncRetrying(**self.retry.tenacity_args(deadline)):
            with attempt:
                left = None if deadline is None else deadline - time.monotonic()
                call = method(request, timeout=left)
                first = await _next_within(call, idle)
        if first is _END:
            return
        yield first
        while (item := await _next_within(call, idle)) is not _END:
            yield item


_END = object()


async def _next_within(call: Any, idle: float | None) -> Any:
    """The stream's next message, or _END; cancels the call if none comes within `idle`."""
    try:
        message = await asyncio.wait_for(call.read(), idle)
    except TimeoutError:
        call.cancel()
        raise ConveyorError(
            grpc.StatusCode.DEADLINE_EXCEEDED, f"the stream sent nothing for {idle:g} s"
        ) from None
    except aio.AioRpcError as exc:
        raise _error(exc) from None
    return _END if message is aio.EOF else message
