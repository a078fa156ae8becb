"""The relay's inference of the queue head's age from the visible counts it reads."""

from __future__ import annotations

import pytest
from conveyor.queue_age import BacklogClock


def test_a_backlog_that_never_shrinks_ages_from_its_first_message():
    clock = BacklogClock()
    ages = [clock.observe(visible, now) for now, visible in enumerate([0, 0, 3, 3, 5, 5, 9])]
    assert ages == [0, 0, 0, 1, 2, 3, 4]


def test_a_shrinking_or_drained_backlog_restarts_the_clock():
    clock = BacklogClock()
    seen = [(0, 4), (10, 6), (20, 5), (30, 7), (40, 0), (50, 2), (60, 2)]
    ages = [clock.observe(visible, now) for now, visible in seen]
    assert ages == [0, 10, 0, 10, 0, 0, 10]


@pytest.mark.parametrize("cycle", [(2, 3, 3), (1, 1, 0)])
def test_a_slow_but_moving_queue_never_reads_as_stalled(cycle: tuple[int, ...]) -> None:
    """Counts that go down once a cycle are consumption: the age stays within a cycle of
    sweeps (a clock that waited for a drop to be confirmed climbed without bound here)."""
    clock = BacklogClock()
    sweep = 5.0
    ages = [clock.observe(visible, i * sweep) for i, visible in enumerate(cycle * 40)]
    assert max(ages) <= len(cycle) * sweep
