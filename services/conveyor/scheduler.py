"""The relay's firing of recurring schedules (conveyor.schedules for when slots fall).

For each due schedule: 1 submit the slot's task through Lifecycle.submit, with the idempotency
key `schedules.slot_key(name, slot)` [schedule.after_submit] 2 advance the schedule's next slot,
conditional on the slot it read. The submit is the fence: two relays firing the same slot, or a
relay killed after 1 whose successor fires it again, replay the one task. A failed advance
means another relay (or a pause or delete) moved the schedule first, which is fine.

Metrics (conveyor.telemetry.metrics): each slot fired counts in conveyor_schedule_firings_total
by outcome (created, replayed, failed); a task created for a slot later than the schedule's due
one (older missed slots skipped) also counts in conveyor_schedule_catch_ups_total; a created
task observes the time from its slot to its creation in conveyor_schedule_fire_lag_seconds.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from conveyor import failpoints, schedules
from conveyor.api.servicer import request_hash
from conveyor.schedule_store import Schedule, ScheduleStore
from conveyor.store import IdempotencyMismatch
from conveyor.tasks.lifecycle import Lifecycle
from conveyor.telemetry import metrics

log = logging.getLogger("conveyor.scheduler")


class Scheduler:
    """`send_seconds`: how long the send after a slot's commit may take (if it fails, the
    outbox mark stays and the relay's next sweep sends it)."""

    def __init__(self, store: ScheduleStore, tasks: Lifecycle, send_seconds: float) -> None:
        self.store = store
        self.tasks = tasks
        self._send_seconds = send_seconds

    def fire_due(self, now: datetime, limit: int) -> tuple[int, datetime | None]:
        """Fires every due schedule's latest slot; returns (tasks created, the next slot the
        query saw after them, if any)."""
        due, upcoming = self.store.due(now, limit)
        created = 0
        for schedule in due:
            created += self.fire(schedule, now)
        return created, upcoming

    def fire(self, s: Schedule, now: datetime) -> bool:
        """Fires `s`'s latest due slot (older missed ones are skipped) and advances it.
        True if this call created the slot's task."""
        slot = schedules.latest_slot(s.cron, s.time_zone, s.next_slot, now)
        if slot is None:
            return False
        key = schedules.slot_key(s.name, slot)
        created = False
        try:
            result = self.tasks.submit(
                tenant=s.tenant,
                task_type=s.task_type,
                payload=s.payload,
                idempotency_key=key,
                request_hash=request_hash(s.task_type, s.payload, s.max_attempts),
                max_attempts=s.max_attempts,
                remaining=None,
                send_budget=lambda: self._send_seconds,
            )
            created = result.created
        except IdempotencyMismatch:
            metrics.schedule_firings_total.labels("replayed").inc()
            # The key made another task: a schedule deleted and created again under its name
            # with another definition, within one slot. That slot has its task.
            log.warning("schedule slot already fired by an earlier definition", extra={"key": key})
        except Exception:
            metrics.schedule_firings_total.labels("failed").inc()
            raise
        else:
            metrics.schedule_firings_total.labels("created" if created else "replayed").inc()
            if created:
                lag = max(0, result.task.created_at_ms - int(slot.timestamp() * 1000)) / 1000
                metrics.schedule_fire_lag_seconds.observe(lag)
                if slot > s.next_slot:
                    metrics.schedule_catch_ups_total.inc()
        failpoints.hit("schedule.after_submit")
        advanced = self.store.advance(s, schedules.next_slot(s.cron, s.time_zone, slot))
        log.info(
            "schedule fired" if created else "schedule slot replayed",
            extra={
                "tenant": s.tenant,
                "schedule": s.name,
                "slot": slot.astimezone(UTC).isoformat(),
                "advanced": advanced,
            },
        )
        return created
