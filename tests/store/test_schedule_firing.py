"""Recurring schedules fired by the relay on the embedded emulator: one task per slot across two
relays, a restart, a relay killed between a slot's submit and its advance, and an outage
through several slots (fired once, for the latest). The relays' clock is set by the test."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from conveyor import relay, schedules
from conveyor.schedule_store import Schedule, ScheduleStore
from store_support import metric, relay_on

NAME = "every-minute"
T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)  # a slot of "* * * * *"


def _schedule(tenant: str) -> Schedule:
    return Schedule(
        tenant=tenant,
        name=NAME,
        cron="* * * * *",
        time_zone="Europe/Paris",
        task_type="demo.sleep",
        payload=b'{"seconds": 0}',
        max_attempts=3,
        paused=False,
        next_slot=T0,
        created_at=T0 - timedelta(minutes=1),
    )


def _slot_tasks(store, tenant: str) -> list[str]:
    """The idempotency keys of the tenant's tasks, oldest first: one per fired slot."""
    return sorted(t.idempotency_key for t in store.list_for_tenant(tenant))


def _at(monkeypatch: pytest.MonkeyPatch, when: datetime) -> None:
    monkeypatch.setattr(relay, "now_ms", lambda: int(when.timestamp() * 1000))


def test_each_slot_fires_one_task_across_two_relays_a_restart_a_kill_and_an_outage(
    settings, store, queue, monkeypatch
):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    schedule_store = ScheduleStore(store)
    assert schedule_store.create(_schedule(tenant)) is None
    a, b = relay_on(settings, store, queue), relay_on(settings, store, queue)
    outcomes = ("created", "replayed", "failed")

    def firings() -> dict[str, float]:
        counts = {o: metric("conveyor_schedule_firings_total", outcome=o) for o in outcomes}
        return {
            **counts,
            "catch_ups": metric("conveyor_schedule_catch_ups_total"),
            "lags": metric("conveyor_schedule_fire_lag_seconds_count"),
        }

    before = firings()
    for minute in range(3):  # both relays sweep every slot
        _at(monkeypatch, T0 + timedelta(minutes=minute, seconds=5))
        a.fire_schedules()
        b.fire_schedules()
    a = relay_on(settings, store, queue)  # a restart: a new relay, nothing carried over

    # Minute 3: relay a is killed after the slot's submit, before the advance...
    _at(monkeypatch, T0 + timedelta(minutes=3, seconds=5))
    with monkeypatch.context() as crash:
        crash.setattr(ScheduleStore, "advance", lambda self, s, next_slot: False)
        a.fire_schedules()
    assert schedule_store.get(tenant, NAME).next_slot == T0 + timedelta(minutes=3)
    b.fire_schedules()  # ...and relay b fires that slot again: the same task, replayed
    a.fire_schedules()

    # Minutes 4 to 7 pass with no relay running; at 7:30 the latest missed slot fires, once.
    _at(monkeypatch, T0 + timedelta(minutes=7, seconds=30))
    b.fire_schedules()
    a.fire_schedules()

    fired = [T0 + timedelta(minutes=m) for m in (0, 1, 2, 3, 7)]
    assert _slot_tasks(store, tenant) == [schedules.slot_key(NAME, slot) for slot in fired]
    assert schedule_store.get(tenant, NAME).next_slot == T0 + timedelta(minutes=8)
    # The metrics say the same: 5 slots' tasks created (their lag observed), one replayed (the
    # slot of the kill, fired again by relay b; the other sweeps found the slot advanced),
    # one catch-up (the outage's).
    after = firings()
    assert {k: after[k] - before[k] for k in after} == {
        "created": 5,
        "replayed": 1,
        "failed": 0,
        "catch_ups": 1,
        "lags": 5,
    }


def test_a_paused_schedule_does_not_fire_and_resumes_at_its_next_slot(
    settings, store, queue, monkeypatch
):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    schedule_store = ScheduleStore(store)
    schedule_store.create(_schedule(tenant))
    a = relay_on(settings, store, queue)
    assert schedule_store.set_paused(tenant, NAME, True, T0, None)

    _at(monkeypatch, T0 + timedelta(minutes=2, seconds=5))
    a.fire_schedules()
    assert _slot_tasks(store, tenant) == []

    resume_at = schedules.next_slot("* * * * *", "UTC", T0 + timedelta(minutes=2, seconds=5))
    assert schedule_store.set_paused(tenant, NAME, False, resume_at, None)
    a.fire_schedules()
    assert _slot_tasks(store, tenant) == []  # the slots of the pause are not caught up
    _at(monkeypatch, T0 + timedelta(minutes=3, seconds=1))
    a.fire_schedules()
    assert _slot_tasks(store, tenant) == [schedules.slot_key(NAME, T0 + timedelta(minutes=3))]
    assert schedule_store.delete(tenant, NAME)
    _at(monkeypatch, T0 + timedelta(minutes=9))
    a.fire_schedules()
    assert len(_slot_tasks(store, tenant)) == 1
