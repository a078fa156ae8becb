"""The blocking client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

import grpc
import tenacity
from pydantic import BaseModel

from conveyor.api.auth import secure_channel
from conveyor.client import settings as client_settings
from conveyor.client.errors import ConveyorError, from_sync
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
from conveyor.settings import TlsSettings
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc

T = TypeVar("T")

# A unary call's budget, retries included.
DEFAULT_TIMEOUT_SECONDS = 10.0
# A stream (list, wait) has no total deadline, since its length is the data's (the server ends
# a listing after CONVEYOR_LIST_MAX_SECONDS): it fails when no message came for this long.
DEFAULT_IDLE_SECONDS = 30.0


class Client:
    """A Conveyor API client over mTLS. `timeout`: each unary call's default budget in
    seconds, retries included; `idle_timeout`: how long a stream may stay silent."""

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
        self._channel = secure_channel(address, tls, server_name)
        self._stub = pb_grpc.TaskServiceStub(self._channel)
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.retry = retry

    @classmethod
    def from_env(cls, **options: Any) -> Client:
        """From CONVEYOR_API_ADDRESS and the CONVEYOR_TLS_* variables, as the CLI."""
        config = client_settings.from_env()
        return cls(config.api_address, config, config.tls_server_name, **options)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def submit(
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
        """Submit `task` (a payload model of a declared type, or a type name and its payload).
        Submitting again with the same key returns the original task (`created` False)."""
        request = submit_request(
            task, payload, idempotency_key, max_attempts, not_before, start_by, lane
        )
        response = self._unary(self._stub.SubmitTask, request, timeout)
        return Submitted(response.task, response.created)

    def submit_many(
        self,
        tasks: Iterable[Item],
        *,
        idempotency_keys: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> list[Submitted | ConveyorError]:
        """Submit many tasks with SubmitTasks, up to MAX_BATCH_TASKS a call (each call its own
        `timeout` budget). Each task's outcome in order: Submitted, or the ConveyorError that
        refused it alone (the others are stored)."""
        results: list[Submitted | ConveyorError] = []
        for request in batches(tasks, idempotency_keys):
            results += batch_results(self._unary(self._stub.SubmitTasks, request, timeout))
        return results

    def get(
        self, task_id: str, *, timeout: float | None = None
    ) -> tuple[pb.Task, list[pb.TaskEvent]]:
        """The task and its event history."""
        response = self._unary(self._stub.GetTask, pb.GetTaskRequest(task_id=task_id), timeout)
        return response.task, list(response.events)

    def cancel(self, task_id: str, reason: str = "", *, timeout: float | None = None) -> pb.Task:
        request = pb.CancelTaskRequest(task_id=task_id, reason=reason)
        return self._unary(self._stub.CancelTask, request, timeout).task

    def list(
        self,
        *,
        state: int = pb.TASK_STATE_UNSPECIFIED,
        task_type: str | None = None,
        limit: int = 0,
        include_payload: bool = False,
        idle_timeout: float | None = None,
    ) -> Iterator[pb.Task]:
        """Your tasks, newest first, as the server streams them."""
        request = pb.ListTasksRequest(
            state=state,  # type: ignore[arg-type]
            task_type=task_type or "",
            limit=limit,
            include_payload=include_payload,
        )
        idle = self.idle_timeout if idle_timeout is None else idle_timeout
        return self._stream(self._stub.ListTasks, request, idle)

    def wait(
        self,
        task_id: str,
        *,
        timeout: float | None = None,
        on_change: Callable[[pb.Task], None] | None = None,
    ) -> pb.Task:
        """Follow the task (WatchTask) until it is terminal and return it; `on_change` sees
        each state. `timeout`: give up after this many seconds (DEADLINE_EXCEEDED); no idle
        timeout, as a task may run for long without a state change."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: pb.Task | None = None
        for task in self._stream(
            self._stub.WatchTask, pb.WatchTaskRequest(task_id=task_id), None, deadline
        ):
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
    def create_schedule(
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
        response = self._unary(self._stub.CreateSchedule, request, timeout)
        return response.schedule, response.created

    def list_schedules(self, *, timeout: float | None = None) -> tuple[pb.Schedule, ...]:
        request = pb.ListSchedulesRequest()
        return tuple(self._unary(self._stub.ListSchedules, request, timeout).schedules)

    def pause_schedule(
        self, name: str, paused: bool = True, *, timeout: float | None = None
    ) -> pb.Schedule:
        """Pause, or resume with `paused=False` (from the next slot after now)."""
        request = pb.PauseScheduleRequest(name=name, paused=paused)
        return self._unary(self._stub.PauseSchedule, request, timeout).schedule

    def delete_schedule(self, name: str, *, timeout: float | None = None) -> bool:
        """True if it existed."""
        request = pb.DeleteScheduleRequest(name=name)
        return self._unary(self._stub.DeleteSchedule, request, timeout).deleted

    def _unary(self, method: Callable[..., T], request: Any, timeout: float | None) -> T:
        budget = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget

        def attempt() -> T:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConveyorError(grpc.StatusCode.DEADLINE_EXCEEDED, "the call's time ran out")
            try:
                return method(request, timeout=left)
            except grpc.RpcError as exc:
                raise from_sync(exc) from None

        return tenacity.Retrying(**self.retry.tenacity_args(deadline))(attempt)

    def _stream(
        self,
        method: Callable[..., Any],
        request: Any,
        idle: float | None,
        deadline: float | None = None,
    ) -> Iterator[Any]:
        """The stream's messages; it is opened again (a read: safe) only while none came."""

        def first_call() -> tuple[Any, Any]:
            left = None if deadline is None else deadline - time.monotonic()
            call = method(request, timeout=left)
            return call, _next_within(call, idle)

        call, first = tenacity.Retrying(**self.retry.tenacity_args(deadline))(first_call)
        if first is _END:
            return
        yield first
        while (item := _next_within(call, idle)) is not _END:
            yield item


_END = object()


def _next_within(call: Any, idle: float | None) -> Any:
    """The stream's next message, or _END; cancels the call (DEADLINE_EXCEEDED for the
    caller) if none comes within `idle` seconds (None: however long)."""
    if idle is None:
        try:
            return next(call, _END)
        except grpc.RpcError as exc:
            raise from_sync(exc) from None
    fired = threading.Event()

    def give_up() -> None:
        fired.set()
        call.cancel()

    timer = threading.Timer(idle, give_up)
    timer.daemon = True
    timer.start()
    try:
        return next(call, _END)
    except grpc.RpcError as exc:
        if fired.is_set():
            raise ConveyorError(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"the stream sent nothing for {idle:g} s"
            ) from None
        raise from_sync(exc) from None
    finally:
        timer.cancel()
