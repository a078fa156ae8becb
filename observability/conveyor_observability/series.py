"""Counter series in promtool's expanding notation, built from constant-rate phases."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal


def cumulative(phases: Sequence[tuple[int, Decimal]]) -> str:
    """A counter starting at 0 that grows by `per_minute` for `minutes`, phase after phase.

    One sample a minute: the first phase covers minutes 0..n (its n increments), each later
    phase the next n minutes. Values are exact decimals, so the text is stable across runs.
    """
    segments = []
    value = Decimal(0)
    for index, (minutes, per_minute) in enumerate(phases):
        if minutes < 1:
            raise ValueError("a phase lasts at least one minute")
        if index == 0:
            segments.append(f"0+{_num(per_minute)}x{minutes}")
        elif minutes == 1:
            segments.append(_num(value + per_minute))
        else:
            start = value + per_minute
            segments.append(f"{_num(start)}+{_num(per_minute)}x{minutes - 1}")
        value += per_minute * minutes
    return " ".join(segments)


def _num(value: Decimal) -> str:
    return format(value.normalize(), "f")
