"""The schedule RPCs' work, for the servicer: validation (every error names its field under
`schedule.`; nothing stored), and the schedule store's calls. The tenant comes from the caller's
certificate, as for every RPC."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from conveyor import schedules
from conveyor.api import validation
from conveyor.api.quotas import QuotaExceeded
from conveyor.schedule_store import Schedule, ScheduleStore
from conveyor.tasks.registry import TaskType
from conveyor.v1 import task_service_pb2 as pb

# A tenant's schedules, at most: their slots are submitted by the relay, past the API's submit
# rate, and a slot comes once a second at most (croniter's seconds field), so this bounds a
# tenant's scheduled submits to MAX_SCHEDULES_PER_TENANT a second. Counted from the tenant's
# listing before the write: creates racing each other may pass it by their number.
MAX_SCHEDULES_PER_TENANT = 100
_FULL_RETRY_AFTER_SECONDS = 60  # nothing frees a place but a delete


def _ts(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def to_pb(s: Schedule) -> pb.Schedule:
    return pb.Schedule(
        name=s.name,
        cron=s.cron,
        time_zone=s.time_zone,
        task_type=s.task_type,
        payload=s.payload,
        max_attempts=s.max_attempts,
        paused=s.paused,
        next_slot=_ts(s.next_slot),
        created_at=_ts(s.created_at),
    )


def schedule_name(value: str, field: str = "name") -> str:
    if not schedules.NAME_RE.fullmatch(value):
        raise validation.InvalidArgument(field, f"must match {schedules.NAME_RE.pattern}")
    return value


class ScheduleRpcs:
    def __init__(
        self, store: ScheduleStore, types: Mapping[str, TaskType], default_max_attempts: int
    ) -> None:
        self.store = store
        self.types = types
        self.default_max_attempts = default_max_attempts

    def _valid(self, tenant: str, req: pb.Schedule, now: datetime) -> Schedule:
        schedule_name(req.name, "schedule.name")
        try:
            schedules.check(req.cron, req.time_zone)
        except schedules.BadSpec as exc:
            raise validation.InvalidArgument(f"schedule.{exc.field}", exc.problem) from None
        as_submit = pb.SubmitTaskRequest(
            task_type=req.task_type,
            payload=req.payload,
            idempotency_key=schedules.slot_key(req.name, now),
            max_attempts=req.max_attempts,
        )
        try:
            max_attempts = validation.submit(as_submit, self.types, self.default_max_attempts)
        except validation.InvalidArgument as exc:
            raise validation.InvalidArgument(
                f"schedule.{exc.field}",
                str(exc).removeprefix(f"{exc.field}: "),
                [(f"schedule.{path}", problem) for path, problem in exc.violations],
            ) from None
        return Schedule(
            tenant=tenant,
            name=req.name,
            cron=req.cron,
            time_zone=req.time_zone,
            task_type=req.task_type,
            payload=req.payload,
            max_attempts=max_attempts,
            paused=False,
            next_slot=schedules.next_slot(req.cron, req.time_zone, now),
            created_at=now,
        )

    def create(
        self, tenant: str, req: pb.CreateScheduleRequest, remaining: float | None
    ) -> tuple[Schedule, bool]:
        """(the schedule, created). Raises ScheduleExists for the name under another definition."""
        wanted = self._valid(tenant, req.schedule, datetime.now(UTC))
        names = {s.name for s in self.store.list_for_tenant(tenant, remaining)}
        if len(names) >= MAX_SCHEDULES_PER_TENANT and wanted.name not in names:
            raise QuotaExceeded(
                tenant,
                "schedules",
                f"tenant {tenant} has {len(names)} schedules, its quota of "
                f"{MAX_SCHEDULES_PER_TENANT}; delete one first",
                _FULL_RETRY_AFTER_SECONDS,
            )
        there = self.store.create(wanted, remaining)
        if there is None:
            return wanted, True
        if not there.same_definition(wanted):
            raise ScheduleExists(wanted.name)
        return there, False

    def pause(
        self, tenant: str, req: pb.PauseScheduleRequest, remaining: float | None
    ) -> Schedule | None:
        schedule_name(req.name)
        found = self.store.get(tenant, req.name, remaining)
        if found is None:
            return None
        resume_at = schedules.next_slot(found.cron, found.time_zone, datetime.now(UTC))
        if not self.store.set_paused(tenant, req.name, req.paused, resume_at, remaining):
            return None
        return self.store.get(tenant, req.name, remaining)


class ScheduleExists(Exception):
    def __init__(self, schedule_name: str) -> None:
        super().__init__(
            f"schedule {schedule_name!r} exists with another definition; delete it first"
        )
