"""Recurring schedules: when a cron spec's slots fall, in its IANA time zone.

A slot is an instant. croniter iterates the spec in the zone (zoneinfo), so daylight saving
time does what a user of cron expects, once:
- a wall time the spring-forward gap skips (02:30 in New York on 2026-03-08) fires once, at the
  end of the gap (03:00 EDT);
- a wall time the fall-back hour repeats (01:30 on 2026-11-01) fires once, at its first
  occurrence: croniter yields both, and the second (fold=1) is skipped here.

A sixth field, croniter's seconds (last: `*/5 * * * * 30` is minute 0, 5, ... at second 30),
fires more often than once a minute; the five-field spec fires at second 0.

Catch-up: a schedule whose slots passed while no relay ran (or while its relay was behind)
fires ONCE, for the latest slot that passed, and skips the older ones; a paused schedule
resumes at its next slot after the resume. A slot's task carries `slot_key` as its idempotency
key, so whichever relay fires it, and however often, it makes one task.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_TICK = timedelta(microseconds=1)
_STEPS_BACK = 4  # get_prev steps past a repeated or skipped wall time: two at most


class BadSpec(ValueError):
    """A cron spec or time zone that cannot be used; `field` names which."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadSpec("time_zone", f"{name!r} is not an IANA time zone") from None


def check(cron: str, time_zone: str) -> None:
    """Raises BadSpec unless `cron` is a cron spec of five fields (minute hour day month dow),
    or six with croniter's seconds field last (`* * * * * */10`: every ten seconds), and
    `time_zone` an IANA zone."""
    zone(time_zone)
    if len(cron.split()) not in (5, 6) or not croniter.is_valid(cron):
        raise BadSpec(
            "cron",
            f"{cron!r} is not a cron spec of five fields (minute hour day month dow), "
            "or six with seconds last",
        )


def _repeated(local: datetime) -> bool:
    """The second occurrence of a wall time the fall-back hour repeats."""
    return local.utcoffset() != local.replace(fold=0).utcoffset()


def next_slot(cron: str, time_zone: str, after: datetime) -> datetime:
    """The first slot strictly after `after` (zone-aware), in UTC."""
    slots = croniter(cron, after.astimezone(zone(time_zone)))
    while True:
        local = slots.get_next(datetime)
        if not _repeated(local):
            return local.astimezone(UTC)


def _before_repeat(local: datetime) -> datetime:
    """`local`, or if it is in a fall-back repeat (whose slots are all skipped), the last
    instant before the repeat began: found by bisection, not by stepping back over its slots."""
    if not _repeated(local):
        return local
    late = local.astimezone(UTC)  # in the repeat
    early = local.replace(fold=0).astimezone(UTC)  # its first occurrence: before the repeat
    while late - early > _TICK:
        mid = early + (late - early) / 2
        if _repeated(mid.astimezone(local.tzinfo)):
            late = mid
        else:
            early = mid
    return early.astimezone(local.tzinfo)


def latest_slot(cron: str, time_zone: str, due: datetime, now: datetime) -> datetime | None:
    """The slot to fire at `now` for a schedule whose next slot is `due`: the latest slot in
    [due, now] (the older ones are skipped), None if `due` has not come.

    It steps back from `now` (croniter's get_prev, skipping a fall-back repeat's second
    occurrence as next_slot does), then forward by next_slot's rules to `now`: a few steps
    however long the schedule went unfired, so a per-second schedule a month behind costs no
    more than one on time (the relay's sweep calls this per due schedule)."""
    if due > now:
        return None
    back = croniter(cron, _before_repeat(now.astimezone(zone(time_zone))))
    for _ in range(_STEPS_BACK):
        local = back.get_prev(datetime)
        if _repeated(local):
            continue
        # The anchor is a wall-time match before `now`; next_slot from just before it finds
        # the first slot at or after it by the forward rules (a spring-forward gap's slot is
        # the gap's end), and on to the last one at or before `now` (on the dot included).
        slot, candidate = None, next_slot(cron, time_zone, local - _TICK)
        while candidate <= now:
            slot, candidate = candidate, next_slot(cron, time_zone, candidate)
        if slot is not None:
            return slot if slot >= due else None
        if local.astimezone(UTC) < due:
            return None
    return None


def slot_key_prefix(name: str) -> str:
    """What the idempotency key of every task of schedule `name` starts with."""
    return f"schedule:{name}:"


def slot_key(name: str, slot: datetime) -> str:
    """The idempotency key of a slot's task: the fence against firing a slot twice."""
    return slot_key_prefix(name) + slot.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
