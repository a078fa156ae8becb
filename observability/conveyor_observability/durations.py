"""Prometheus durations ("5m", "1d") as seconds and back."""

from __future__ import annotations

import re

UNIT_SECONDS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION_RE = re.compile(r"^([1-9][0-9]*)([wdhms])$")


def seconds(duration: str) -> int:
    """Seconds in a single-unit Prometheus duration such as "30m" or "3d"."""
    match = _DURATION_RE.match(duration)
    if match is None:
        raise ValueError(f"{duration!r} is not a duration like 5m, 6h or 30d")
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]


def minutes(duration: str) -> int:
    """Whole minutes in `duration`; promtool test inputs advance a minute per sample."""
    total = seconds(duration)
    if total % 60:
        raise ValueError(f"{duration!r} is not a whole number of minutes")
    return total // 60


def text(total_seconds: int) -> str:
    """`total_seconds` in its largest whole unit: 79200 -> "22h", 90 -> "90s"."""
    for unit, size in UNIT_SECONDS.items():
        if total_seconds % size == 0:
            return f"{total_seconds // size}{unit}"
    raise ValueError(f"{total_seconds!r} is not a whole number of seconds")
