"""`conveyor.v1.TaskService`: validation, tenancy, deadlines and error mapping around the store.

Deadlines: each RPC checks the caller's remaining time before it touches DynamoDB and fails
fast with DEADLINE_EXCEEDED when it cannot cover a call; every AWS call then gets a client whose
timeouts (all retries included) fit in what remains (conveyor.aws.AwsClients.client).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import wraps
from typing import Any, NoReturn, TypeVar

import grpc
import pybreaker
from botocore.exceptions import BotoCoreError, ClientError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from conveyor.api import convert, validation
from conveyor.api.admission import Admission
from conveyor.api.auth import tenant_of
from conveyor.api.quotas import RETRY_AFTER, QuotaExceeded, Streams, SubmitRate
from conveyor.api.schedule_rpcs import ScheduleExists, ScheduleRpcs, schedule_name, to_pb
from conveyor.aws import (
    DeadlineTooShort,
    aws_cpu_seconds_on_this_thread,
    aws_seconds_on_this_thread,
    is_dependency_fault,
)
from conveyor.domain import DEFAULT_LANE, IllegalTransition, Task, TaskState
from conveyor.queue import TaskQueue
from conveyor.schedule_store import ScheduleStore
from conveyor.settings import ApiSettings
from conveyor.store import (
    ITEMS_PER_TASK,
    MAX_BATCH_TASKS,
    MAX_TRANSACTION_ITEMS,
    Conflict,
    EffectsApplied,
    IdempotencyMismatch,
    NewTask,
    TaskStore,
    now_ms,
)
from conveyor.tasks.lifecycle import Lifecycle
from conveyor.tasks.registry import TaskType
from conveyor.telemetry import metrics
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc

log = logging.getLogger("conveyor.api")
F = TypeVar("F", bound=Callable[..., Any])

NO_DEADLINE = 1e6  # grpc reports a huge remaining time when the client set no deadline


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, detail: str) -> NoReturn:
    context.abort(code, detail)
    raise AssertionError("unreachable: abort raises")


def _abort_invalid(context: grpc.ServicerContext, exc: validation.InvalidArgument) -> NoReturn:
    """INVALID_ARGUMENT with every offending field as a google.rpc.BadRequest violation."""
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=path, description=problem)
            for path, problem in exc.violations
        ]
    )
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(exc))
    status.details.add().Pack(bad_request)
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("unreachable: abort raises")


def _unavailable(context: grpc.ServicerContext, detail: str, cause: Exception) -> NoReturn:
    """UNAVAILABLE, logged with its cause: the client sees only `detail`."""
    log.error(
        "answered UNAVAILABLE: %s: %s: %s",
        detail,
        type(cause).__name__,
        cause,
        extra={"grpc_code": "UNAVAILABLE", "cause": f"{type(cause).__name__}: {cause}"},
    )
    _abort(context, grpc.StatusCode.UNAVAILABLE, detail)


@contextmanager
def error_mapping(context: grpc.ServicerContext) -> Iterator[None]:
    """Turns domain and dependency errors into gRPC status codes, the same way for every RPC."""
    try:
        yield
    except validation.InvalidArgument as exc:
        _abort_invalid(context, exc)
    except QuotaExceeded as exc:
        metrics.quota_refusals_total.labels(exc.tenant, exc.quota).inc()
        context.set_trailing_metadata(((RETRY_AFTER, str(exc.retry_after)),))
        _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    except IdempotencyMismatch as exc:
        _abort(context, grpc.StatusCode.ALREADY_EXISTS, str(exc))
    except (IllegalTransition, EffectsApplied) as exc:
        _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    except Conflict:
        _abort(context, grpc.StatusCode.ABORTED, "the task changed concurrently; retry")
    except DeadlineTooShort as exc:
        _abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
    except pybreaker.CircuitBreakerError as exc:
        _unavailable(context, "task store unavailable (circuit open)", exc)
    except (ClientError, BotoCoreError) as exc:
        if is_dependency_fault(exc):
            _unavailable(context, "task store unavailable, retry", exc)
        log.exception("unexpected AWS error")
        _abort(context, grpc.StatusCode.INTERNAL, "internal error")


def unary_rpc(fn: F) -> F:
    @wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        with error_mapping(context):
            return fn(self, request, context)

    return wrapper  # type: ignore[return-value]


def stream_rpc(fn: F) -> F:
    @wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        with error_mapping(context):
            yield from fn(self, request, context)

    return wrapper  # type: ignore[return-value]


def request_hash(
    task_type: str,
    payload: bytes,
    max_attempts: int,
    not_before_ms: int = 0,
    start_by_ms: int = 0,
    lane: str = DEFAULT_LANE,
) -> str:
    """What the client sent (max_attempts 0 when it asked for none), not what was derived
    from it: a default changed between a submit and its retry must not turn the retry into
    ALREADY_EXISTS. The times join the hash only when set, and the lane only when not the
    default (the validated lane: an empty one is the default), so hashes of requests without
    them stay what they were; a replay asking for another lane is a mismatch (ALREADY_EXISTS)."""
    digest = hashlib.sha256()
    timing = [f"{not_before_ms}/{start_by_ms}".encode()] if not_before_ms or start_by_ms else []
    lanes = [f"lane={lane}".encode()] if lane != DEFAULT_LANE else []
    for part in (task_type.encode(), payload, str(max_attempts).encode(), *timing, *lanes):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _refused(code: int, message: str) -> pb.SubmitTaskResult:
    return pb.SubmitTaskResult(outcome=pb.SUBMIT_OUTCOME_REFUSED, code=code, message=message)


class TaskServicer(pb_grpc.TaskServiceServicer):
    def __init__(
        self,
        settings: ApiSettings,
        store: TaskStore,
        queue: TaskQueue,
        types: Mapping[str, TaskType],
    ) -> None:
        self.settings = settings
        self.types = types
        self.store = store
        self.tasks = Lifecycle(store, queue)
        # Each watch holds a server thread while it polls: at most half of them, so watches
        # can never starve SubmitTask and GetTask; and each tenant at most its quota of them.
        self._watch_slots = threading.BoundedSemaphore(max(1, settings.api_max_workers // 2))
        self._submit_rate = SubmitRate(
            settings.tenant_submits_per_second, settings.tenant_submit_burst
        )
        self._streams = Streams(settings.tenant_max_streams)
        self._admission = Admission(
            store, settings.tenant_max_queued_tasks, settings.tenant_max_queue_age_seconds
        )
        self._schedules = ScheduleRpcs(ScheduleStore(store), types, settings.default_max_attempts)

    def _remaining(self, context: grpc.ServicerContext) -> float | None:
        left = context.time_remaining()
        if left is None or left > NO_DEADLINE:
            return None
        if left < self.settings.min_deadline_seconds:
            _abort(
                context,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{left * 1000:.0f} ms left: not enough for a store call",
            )
        return float(left)

    @contextmanager
    def _stream(self, context: grpc.ServicerContext, max_seconds: float) -> Iterator[str]:
        """The tenant's stream, within its quota, cancelled after `max_seconds` whatever it
        is doing: a stream whose client does not read blocks in its send, which no check
        between messages would ever reach."""
        tenant = tenant_of(context)
        with self._streams.opened(tenant):
            timer = threading.Timer(max_seconds, context.cancel)
            timer.daemon = True
            timer.start()
            try:
                yield tenant
            finally:
                timer.cancel()

    def _own_task(self, context: grpc.ServicerContext, task_id: str) -> Task:
        tenant = tenant_of(context)
        task = self.store.get(task_id, remaining=self._remaining(context))
        if task is None or task.tenant != tenant:
            # Another tenant's task is indistinguishable from a missing one.
            _abort(context, grpc.StatusCode.NOT_FOUND, f"task {task_id} not found")
        return task

    # ---- RPCs ----
    @unary_rpc
    def SubmitTask(
        self, request: pb.SubmitTaskRequest, context: grpc.ServicerContext
    ) -> pb.SubmitTaskResponse:
        started, in_aws = time.perf_counter(), aws_seconds_on_this_thread()
        started_cpu, in_aws_cpu = time.thread_time(), aws_cpu_seconds_on_this_thread()
        try:
            return self._submit(request, context)
        finally:
            overhead = time.perf_counter() - started - (aws_seconds_on_this_thread() - in_aws)
            metrics.api_overhead_seconds.labels("SubmitTask").observe(max(0.0, overhead))
            cpu = time.thread_time() - started_cpu - (aws_cpu_seconds_on_this_thread() - in_aws_cpu)
            metrics.api_overhead_cpu_seconds.labels("SubmitTask").observe(max(0.0, cpu))

    def _submit(
        self, request: pb.SubmitTaskRequest, context: grpc.ServicerContext
    ) -> pb.SubmitTaskResponse:
        tenant = tenant_of(context)
        self._submit_rate.take(tenant)
        max_attempts = validation.submit(request, self.types, self.settings.default_max_attempts)
        lane = validation.lane(request)
        sent = validation.sent_times(request)
        sent_hash = request_hash(
            request.task_type, request.payload, request.max_attempts, *sent, lane=lane
        )
        try:
            not_before_ms, start_by_ms = validation.timing(request, now_ms())
        except validation.InvalidArgument:
            replayed = self._replayed(tenant, request.idempotency_key, sent_hash, context)
            if replayed is None:
                raise
            return pb.SubmitTaskResponse(task=convert.task(replayed), created=False)
        self._admission.check(tenant, self._remaining(context))
        result = self.tasks.submit(
            tenant=tenant,
            task_type=request.task_type,
            payload=request.payload,
            idempotency_key=request.idempotency_key,
            request_hash=sent_hash,
            max_attempts=max_attempts,
            remaining=self._remaining(context),
            send_budget=self._send_budget(context),
            not_before_ms=not_before_ms,
            start_by_ms=start_by_ms,
            lane=lane,
        )
        task = result.task
        log.info(
            "task submitted" if result.created else "task submit replayed",
            extra={"task_id": task.task_id, "task_type": task.task_type, "tenant": tenant},
        )
        if result.created:
            metrics.tasks_submitted_total.labels(task.task_type).inc()
        return pb.SubmitTaskResponse(task=convert.task(task), created=result.created)

    @unary_rpc
    def SubmitTasks(
        self, request: pb.SubmitTasksRequest, context: grpc.ServicerContext
    ) -> pb.SubmitTasksResponse:
        """Each task validated on its own (a bad one is refused, the others go on), the valid
        ones committed in one transaction (TaskStore.submit_many)."""
        tenant = tenant_of(context)
        count = len(request.tasks)
        if not 1 <= count <= MAX_BATCH_TASKS:
            raise validation.InvalidArgument(
                "tasks",
                f"has {count}; 1 to {MAX_BATCH_TASKS} per request (a task is {ITEMS_PER_TASK} "
                f"items of one DynamoDB transaction of at most {MAX_TRANSACTION_ITEMS})",
            )
        self._submit_rate.take(tenant, count)
        self._admission.check(tenant, self._remaining(context))
        results: dict[int, pb.SubmitTaskResult] = {}
        accepted: list[tuple[int, NewTask]] = []
        keys: dict[str, int] = {}
        now = now_ms()
        for i, task_request in enumerate(request.tasks):
            try:
                lane = validation.lane(task_request)
                sent_hash = request_hash(
                    task_request.task_type,
                    task_request.payload,
                    task_request.max_attempts,
                    *validation.sent_times(task_request),
                    lane=lane,
                )
                max_attempts = validation.submit(
                    task_request, self.types, self.settings.default_max_attempts
                )
                validation.key_not_repeated(task_request, keys)
                try:
                    not_before_ms, start_by_ms = validation.timing(task_request, now)
                except validation.InvalidArgument:
                    key = task_request.idempotency_key
                    replayed = self._replayed(tenant, key, sent_hash, context)
                    if replayed is None:
                        raise
                    keys[key] = i
                    results[i] = pb.SubmitTaskResult(
                        outcome=pb.SUBMIT_OUTCOME_REPLAYED, task=convert.task(replayed)
                    )
                    continue
            except validation.InvalidArgument as exc:
                results[i] = _refused(code_pb2.INVALID_ARGUMENT, f"tasks[{i}].{exc}")
                continue
            keys[task_request.idempotency_key] = i
            accepted.append(
                (
                    i,
                    NewTask(
                        tenant=tenant,
                        task_type=task_request.task_type,
                        payload=task_request.payload,
                        idempotency_key=task_request.idempotency_key,
                        request_hash=sent_hash,
                        max_attempts=max_attempts,
                        not_before_ms=not_before_ms,
                        start_by_ms=start_by_ms,
                        lane=lane,
                    ),
                )
            )
        if accepted:
            committed = self.tasks.submit_many(
                [new for _, new in accepted],
                remaining=self._remaining(context),
                send_budget=self._send_budget(context),
            )
            for (i, _), result in zip(accepted, committed, strict=True):
                if isinstance(result, IdempotencyMismatch):
                    results[i] = _refused(code_pb2.ALREADY_EXISTS, f"tasks[{i}]: {result}")
                    continue
                if result.created:
                    metrics.tasks_submitted_total.labels(result.task.task_type).inc()
                outcome = (
                    pb.SUBMIT_OUTCOME_CREATED if result.created else pb.SUBMIT_OUTCOME_REPLAYED
                )
                results[i] = pb.SubmitTaskResult(outcome=outcome, task=convert.task(result.task))
        log.info(
            "task batch submitted",
            extra={"tenant": tenant, "tasks": count, "refused": count - len(accepted)},
        )
        return pb.SubmitTasksResponse(results=[results[i] for i in range(count)])

    def _replayed(
        self, tenant: str, key: str, sent_hash: str, context: grpc.ServicerContext
    ) -> Task | None:
        """The task this very request made earlier, for a request whose times no longer pass
        (a start_by now behind): a retry whose first answer was lost must still learn of its
        task. Read only on that refusal, so a submit stays free of reads."""
        return self.store.replayed(tenant, key, sent_hash, self._remaining(context))

    def _send_budget(self, context: grpc.ServicerContext) -> Callable[[], float]:
        def send_budget() -> float:
            left = context.time_remaining()
            return min(self.settings.send_timeout_seconds, left if left else NO_DEADLINE)

        return send_budget

    @unary_rpc
    def GetTask(
        self, request: pb.GetTaskRequest, context: grpc.ServicerContext
    ) -> pb.GetTaskResponse:
        validation.task_id(request.task_id)
        task = self._own_task(context, request.task_id)
        return pb.GetTaskResponse(
            task=convert.task(task), events=[convert.event(e) for e in task.events]
        )

    @stream_rpc
    def ListTasks(
        self, request: pb.ListTasksRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.Task]:
        state, task_type, page_size = validation.list_request(request)
        with self._stream(context, self.settings.list_max_seconds) as tenant:
            tasks = self.store.list_for_tenant(
                tenant,
                state=state,
                task_type=task_type,
                page_size=page_size,
                remaining=self._remaining(context),
                keep_going=context.is_active,
                with_payload=request.include_payload,
            )
            for sent, task in enumerate(tasks, start=1):
                if not context.is_active():
                    return
                yield convert.task(task)
                if request.limit and sent >= request.limit:
                    return

    @unary_rpc
    def CancelTask(
        self, request: pb.CancelTaskRequest, context: grpc.ServicerContext
    ) -> pb.CancelTaskResponse:
        validation.cancel(request)
        reason = request.reason or "cancelled by the client"
        for _ in range(5):
            task = self._own_task(context, request.task_id)
            if task.state == TaskState.CANCELLED:
                return pb.CancelTaskResponse(task=convert.task(task))
            try:
                task = self.tasks.cancel(task, reason, self._remaining(context))
            except Conflict:
                continue  # raced with a worker; decide again on a fresh read
            return pb.CancelTaskResponse(task=convert.task(task))
        _abort(context, grpc.StatusCode.ABORTED, "task kept changing; retry the cancel")

    @stream_rpc
    def WatchTask(
        self, request: pb.WatchTaskRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.Task]:
        """Streams each change until the task is terminal or CONVEYOR_WATCH_MAX_SECONDS pass
        (then the stream ends OK and the client watches again). A tenant over its stream
        quota is refused with RESOURCE_EXHAUSTED; a replica out of watch slots (its capacity,
        not the caller's doing) with UNAVAILABLE."""
        validation.task_id(request.task_id)
        # The backstop cancels a watch whose client stopped reading, a poll after its end.
        backstop = self.settings.watch_max_seconds + self.settings.watch_poll_seconds + 1
        with self._stream(context, backstop):
            if not self._watch_slots.acquire(blocking=False):
                _abort(context, grpc.StatusCode.UNAVAILABLE, "too many watches; retry later")
            try:
                seen = -1
                until = time.monotonic() + self.settings.watch_max_seconds
                while context.is_active() and time.monotonic() < until:
                    task = self._own_task(context, request.task_id)
                    if task.version != seen:
                        seen = task.version
                        yield convert.task(task)
                    if task.state.terminal:
                        return
                    time.sleep(self.settings.watch_poll_seconds)
            finally:
                self._watch_slots.release()

    # ---- recurring schedules (conveyor.schedules; fired by the relay) ----
    @unary_rpc
    def CreateSchedule(
        self, request: pb.CreateScheduleRequest, context: grpc.ServicerContext
    ) -> pb.CreateScheduleResponse:
        tenant = tenant_of(context)
        try:
            schedule, created = self._schedules.create(tenant, request, self._remaining(context))
        except ScheduleExists as exc:
            _abort(context, grpc.StatusCode.ALREADY_EXISTS, str(exc))
        log.info(
            "schedule created" if created else "schedule create replayed",
            extra={"tenant": tenant, "schedule": schedule.name},
        )
        return pb.CreateScheduleResponse(schedule=to_pb(schedule), created=created)

    @unary_rpc
    def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: grpc.ServicerContext
    ) -> pb.ListSchedulesResponse:
        found = self._schedules.store.list_for_tenant(tenant_of(context), self._remaining(context))
        return pb.ListSchedulesResponse(schedules=[to_pb(s) for s in found])

    @unary_rpc
    def PauseSchedule(
        self, request: pb.PauseScheduleRequest, context: grpc.ServicerContext
    ) -> pb.PauseScheduleResponse:
        schedule = self._schedules.pause(tenant_of(context), request, self._remaining(context))
        if schedule is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"schedule {request.name!r} not found")
        return pb.PauseScheduleResponse(schedule=to_pb(schedule))

    @unary_rpc
    def DeleteSchedule(
        self, request: pb.DeleteScheduleRequest, context: grpc.ServicerContext
    ) -> pb.DeleteScheduleResponse:
        name = schedule_name(request.name)
        tenant = tenant_of(context)
        deleted = self._schedules.store.delete(tenant, name, self._remaining(context))
        log.info("schedule deleted", extra={"tenant": tenant, "schedule": name, "was": deleted})
        return pb.DeleteScheduleResponse(deleted=deleted)
