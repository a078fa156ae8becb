"""The soak's recurring schedule, and its firings counted from outside the system.

The soak creates one schedule (every PERIOD_SECONDS, croniter's seconds field) before its chaos
starts, keeps it through a calm stretch after the chaos (CALM_SECONDS: nothing killed, no fault
window) and then deletes it. Each slot's task runs the outside oracle's handler
(conveyor_dev.local.oracle), which records in its sink, with the handler's own wall time, the
idempotency key it was given: the slot is in it (`schedule:<name>:<slot in UTC>`). The verdict
counts, per slot, the tasks whose effect the sink saw applied, against the slots the soak
computes itself from the period (no store read, no schedule record):

- doubled: a slot with more than one task applied (the slot key is the fence against that);
- early: a slot's task whose handler first ran before the slot (the sink's time, written by
  the worker's handler: the system's own created time would be the relay's word for it);
- missed: a slot of the chaos with none, unless the catch-up policy (conveyor.schedules: after
  slots passed unfired, fire the latest once and skip the older) allows it: the relay was
  SIGKILLed (and restarting, RESTART_ALLOWANCE_SECONDS) or a DynamoDB fault window was open
  during the slot's period (a firing needs only DynamoDB: an SQS fault delays the send, which
  the outbox retries, not the firing); a slot of the calm stretch is never excused;
- unexpected: a schedule task for an instant that is not a slot of the spec, or a slot after
  the deletion.
The slots of the last period before the deletion may or may not fire (the delete races them):
they are counted when fired and never missed.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc

from conveyor_dev.local import oracle

NAME = "soak-every-3s"
PERIOD_SECONDS = 3  # divides a minute: the slots are the epoch's multiples of it
CRON = f"* * * * * */{PERIOD_SECONDS}"  # every minute, at seconds 0, 3, 6, ...
KEY_PREFIX = f"schedule:{NAME}:"
# How long a SIGKILLed relay may take to be back and firing on a loaded 2-core machine.
RESTART_ALLOWANCE_SECONDS = 8.0
# The schedule's calm stretch after the chaos: every slot in it must fire exactly once.
CALM_SECONDS = 15.0


def is_schedule_key(key: str) -> bool:
    return key.startswith("schedule:")


def _call(what: str, call: object, deadline: float) -> None:
    """`call()` until the API answers (it may be SIGKILLed meanwhile): create and delete are
    idempotent (the same definition again is answered; a deleted one is gone)."""
    delay = 0.2
    while True:
        try:
            call()  # type: ignore[operator]
            return
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the soak's schedule: {what} got no answer") from err
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def create(stub: pb_grpc.TaskServiceStub, deadline: float) -> float:
    """Create the schedule; returns the wall time just before the request."""
    at = time.time()
    request = pb.CreateScheduleRequest(
        schedule=pb.Schedule(
            name=NAME,
            cron=CRON,
            time_zone="UTC",
            task_type=oracle.TASK_TYPE,
            payload=json.dumps({"seconds": 0.1}).encode(),
            max_attempts=5,
        )
    )
    _call("create", lambda: stub.CreateSchedule(request, timeout=5), deadline)
    return at


def delete(stub: pb_grpc.TaskServiceStub, deadline: float) -> float:
    """Delete the schedule; returns the wall time once the API said so."""
    request = pb.DeleteScheduleRequest(name=NAME)
    _call("delete", lambda: stub.DeleteSchedule(request, timeout=5), deadline)
    return time.time()


@dataclass
class ScheduleReport:
    slots: int = 0  # slots between the creation and the last period before the deletion
    fired_once: int = 0  # of them, with exactly one task applied
    doubled: int = 0
    missed: int = 0  # not allowed by the catch-up policy
    early: int = 0  # a task whose handler ran before its slot
    calm_slots: int = 0  # of `slots`, after the chaos: none may be skipped
    calm_fired_once: int = 0
    skipped_by_policy: int = 0
    unexpected: int = 0
    late_slots_fired: int = 0  # of the last period's, which may or may not fire
    relay_kills: int = 0
    # For an audit of the verdict: the slots with no task (UTC ISO), and when the relay died.
    unfired_slots: list[str] = field(default_factory=list)
    relay_killed_at: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(
            self.doubled
            or self.missed
            or self.early
            or self.unexpected
            or self.calm_slots == 0
            or self.calm_fired_once < self.calm_slots
        )


def _slot_of(key: str) -> float | None:
    """The slot a key names, None if it names none (`schedule:<name>:<UTC second>Z` only)."""
    try:
        at = datetime.strptime(key.removeprefix(KEY_PREFIX), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return at.replace(tzinfo=UTC).timestamp()


def judge(
    seen: oracle.Observed,
    created_at: float,
    calm_from: float,
    deleted_at: float,
    relay_kills: list[float],
    dynamodb_windows: list[tuple[float, float]],
) -> ScheduleReport:
    """The schedule's verdict from the sink (see the module's docstring). The chaos ran from
    `created_at` to `calm_from`; `dynamodb_windows` are its DynamoDB fault windows."""
    applied: dict[float, set[str]] = {}
    report = ScheduleReport(
        relay_kills=len(relay_kills), relay_killed_at=[_iso(k) for k in relay_kills]
    )
    for task_id, key in seen.task_keys.items():
        if not key.startswith(KEY_PREFIX) or not seen.applied(task_id):
            continue
        slot = _slot_of(key)
        if slot is None or slot % PERIOD_SECONDS or slot <= created_at or slot > deleted_at:
            report.unexpected += 1
            continue
        ran = [line["at"] for line in seen.lines if line["task_id"] == task_id]
        report.early += min(ran) < slot
        applied.setdefault(slot, set()).add(task_id)
    first = math.floor(created_at / PERIOD_SECONDS) * PERIOD_SECONDS + PERIOD_SECONDS
    slot = float(first)
    while slot <= deleted_at:
        tasks = len(applied.get(slot, ()))
        report.doubled += tasks > 1
        if slot > deleted_at - PERIOD_SECONDS:
            report.late_slots_fired += tasks > 0
        else:
            report.slots += 1
            calm = slot > calm_from
            report.calm_slots += calm
            report.fired_once += tasks == 1
            report.calm_fired_once += calm and tasks == 1
            if tasks == 0 and calm:
                report.missed += 1
            elif tasks == 0 and _excused(slot, relay_kills, dynamodb_windows):
                report.skipped_by_policy += 1
            elif tasks == 0:
                report.missed += 1
            if tasks == 0:
                report.unfired_slots.append(_iso(slot))
        slot += PERIOD_SECONDS
    return report


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def _excused(slot: float, kills: list[float], windows: list[tuple[float, float]]) -> bool:
    """Could the relay have been unable to fire `slot` before the next one came?"""
    end = slot + PERIOD_SECONDS
    down = [(k, k + RESTART_ALLOWANCE_SECONDS) for k in kills]
    return any(a < end and b > slot for a, b in [*down, *windows])
