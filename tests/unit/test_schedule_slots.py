"""When a schedule's slots fall: cron in its IANA zone through DST, and the catch-up policy
(fire once, for the latest missed slot). Fixed dates; `now` is always passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conveyor import schedules

NY = "America/New_York"


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _slots(cron: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    out, at = [], start
    while (at := schedules.next_slot(cron, zone, at)) < end:
        out.append(at)
    return out


def test_a_daily_slot_in_the_spring_forward_gap_fires_once_at_the_end_of_the_gap():
    # 2026-03-08 02:00 EST -> 03:00 EDT: 02:30 does not exist that day.
    slots = _slots("30 2 * * *", NY, _utc(2026, 3, 7, 0), _utc(2026, 3, 10, 0))
    assert slots == [
        _utc(2026, 3, 7, 7, 30),  # 02:30 EST
        _utc(2026, 3, 8, 7, 0),  # 03:00 EDT, the gap's end: once
        _utc(2026, 3, 9, 6, 30),  # 02:30 EDT
    ]


def test_a_daily_slot_in_the_repeated_fall_back_hour_fires_once_at_its_first_occurrence():
    # 2026-11-01 02:00 EDT -> 01:00 EST: 01:30 happens twice that day.
    slots = _slots("30 1 * * *", NY, _utc(2026, 10, 31, 0), _utc(2026, 11, 3, 0))
    assert slots == [
        _utc(2026, 10, 31, 5, 30),  # 01:30 EDT
        _utc(2026, 11, 1, 5, 30),  # 01:30 EDT, the first of the two: once
        _utc(2026, 11, 2, 6, 30),  # 01:30 EST
    ]


def test_an_hourly_schedule_skips_the_repeated_hour_as_cron_does():
    slots = _slots("0 * * * *", NY, _utc(2026, 11, 1, 4, 30), _utc(2026, 11, 1, 8, 30))
    # local 01:00 EDT, (01:00 EST repeats it: skipped), 02:00 EST, 03:00 EST
    assert slots == [_utc(2026, 11, 1, 5), _utc(2026, 11, 1, 7), _utc(2026, 11, 1, 8)]


def test_catch_up_fires_once_for_the_latest_missed_slot():
    due = _utc(2026, 5, 1, 10, 0)
    now = due + timedelta(minutes=47, seconds=10)  # slots every 15 minutes missed meanwhile
    assert schedules.latest_slot("*/15 * * * *", "UTC", due, now) == _utc(2026, 5, 1, 10, 45)
    # after a long outage too (looked for in the last day first)
    now = due + timedelta(days=30, minutes=5)
    assert schedules.latest_slot("*/15 * * * *", "UTC", due, now) == _utc(2026, 5, 31, 10, 0)
    # a weekly schedule down three weeks: its latest slot, not its oldest
    due = _utc(2026, 5, 4, 9)  # a Monday
    now = due + timedelta(days=22)
    assert schedules.latest_slot("0 9 * * 1", "UTC", due, now) == _utc(2026, 5, 25, 9)


def test_a_slot_not_yet_come_is_not_fired_and_one_on_the_dot_is():
    due = _utc(2026, 5, 1, 10, 0)
    assert schedules.latest_slot("*/15 * * * *", "UTC", due, due - timedelta(seconds=1)) is None
    assert schedules.latest_slot("*/15 * * * *", "UTC", due, due) == due


def test_the_slot_key_names_the_schedule_and_the_slot_in_utc():
    slot = datetime(2026, 11, 1, 1, 30, tzinfo=schedules.zone(NY))
    assert schedules.slot_key("nightly", slot) == "schedule:nightly:2026-11-01T05:30:00Z"


def test_a_sixth_field_is_seconds_and_its_slots_keys_and_catch_up_follow_it():
    """`* * * * * */5` fires every five seconds; each slot has its own key (to the second), and
    a relay away for three slots fires the latest once."""
    schedules.check("* * * * * */5", "UTC")
    at = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    first = schedules.next_slot("* * * * * */5", "UTC", at)
    assert first == datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    assert schedules.next_slot("* * * * * */5", "UTC", first) == first + timedelta(seconds=5)
    assert schedules.slot_key("s", first) == "schedule:s:2026-01-01T00:00:05Z"
    late = first + timedelta(seconds=12)
    latest = schedules.latest_slot("* * * * * */5", "UTC", first, late)
    assert latest == datetime(2026, 1, 1, 0, 0, 15, tzinfo=UTC)
    # The five-field spec still fires on the minute, at second 0.
    assert schedules.next_slot("* * * * *", "UTC", at) == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "zone", "field"),
    [
        ("61 * * * *", "UTC", "cron"),
        ("* * * *", "UTC", "cron"),
        ("* * * * * * *", "UTC", "cron"),  # seven fields: croniter's year is not offered
        ("* * * * * 61", "UTC", "cron"),  # the sixth field is seconds
        ("0 9 * * *", "Mars/Olympus", "time_zone"),
        ("0 9 * * *", "", "time_zone"),
    ],
)
def test_a_bad_spec_names_its_field(cron, zone, field):
    with pytest.raises(schedules.BadSpec) as raised:
        schedules.check(cron, zone)
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("cron", "start"),
    [
        ("30 2 * * *", _utc(2026, 3, 7, 12)),  # a spring-forward gap's slot
        ("*/20 * * * *", _utc(2026, 3, 8, 5)),  # through the gap
        ("30 1 * * *", _utc(2026, 10, 31, 12)),  # a fall-back repeat's slot
        ("*/20 * * * *", _utc(2026, 11, 1, 4)),  # through the repeated hour
        ("* * * * * */30", _utc(2026, 11, 1, 5, 50)),  # seconds, through the repeat
    ],
)
def test_latest_slot_agrees_with_stepping_every_slot_through_dst(cron, start):
    """Stepping back from `now` finds what stepping forward from `due` finds, on DST days, for
    every `now` on a 7-minute grid (on slots, between them, in the gap and the repeat)."""
    due = schedules.next_slot(cron, NY, start)
    every = [due, *_slots(cron, NY, due, due + timedelta(hours=37))]  # the slow, obvious way
    for minutes in range(0, 36 * 60, 7):
        now = due + timedelta(minutes=minutes, seconds=minutes % 60)
        stepped = [slot for slot in every if slot <= now][-1]
        assert schedules.latest_slot(cron, NY, due, now) == stepped, now


def test_catch_up_work_does_not_grow_with_the_gap(monkeypatch):
    """A per-second schedule 30 days behind: the right slot, in a handful of croniter steps
    (stepping forward from `due` took 86,400, a day's worth, and 6 s on the relay's sweep)."""
    steps = 0

    class Counted(schedules.croniter):  # the real croniter, its steps counted
        def get_next(self, *args, **kwargs):
            nonlocal steps
            steps += 1
            return super().get_next(*args, **kwargs)

        def get_prev(self, *args, **kwargs):
            nonlocal steps
            steps += 1
            return super().get_prev(*args, **kwargs)

    monkeypatch.setattr(schedules, "croniter", Counted)
    due = _utc(2026, 5, 1, 10, 0, 0)
    now = due + timedelta(days=30, seconds=7, microseconds=500_000)
    assert schedules.latest_slot("* * * * * *", "UTC", due, now) == due + timedelta(
        days=30, seconds=7
    )
    assert schedules.latest_slot("* * * * * */5", NY, due, now) == due + timedelta(
        days=30, seconds=5
    )
    assert steps < 20
