"""The relay's inference of the queue head's age from the visible counts it reads."""

from __future__ import annotations

from conveyor.queue_age import BacklogClock


def _ages(seen: list[tuple[float, int]]) -> list[float]:
    clock = BacklogClock()
    return [clock.observe(visible, now) for now, visible in seen]


def test_a_backlog_that_never_shrinks_ages_from_its_first_message():
    clock = BacklogClock()
    ages = [clock.observe(visible, now) for now, visible in enumerate([0, 0, 3, 3, 5, 5, 9])]
    assert ages == [0, 0, 0, 1, 2, 3, 4]


def test_a_one_read_dip_does_not_restart_the_clock():
    # Issue 17: the count dipped once, about when a message a dead worker's poll had hidden
    # came back into view, and the page came one visibility timeout late.
    seen = [(0, 0), (10, 2), (20, 2), (30, 1), (40, 3), (50, 3), (60, 3)]
    assert _ages(seen) == [0, 0, 10, 20, 30, 40, 50]


def test_a_drop_the_next_read_still_shows_restarts_the_clock_at_the_drop():
    seen = [(0, 4), (10, 6), (20, 5), (30, 3)]
    assert _ages(seen) == [0, 10, 20, 10]


def test_consumers_taking_messages_steadily_keep_the_age_one_sweep_long():
    seen = [(0, 10), (10, 8), (20, 6), (30, 4), (40, 2)]
    assert _ages(seen) == [0, 10, 10, 10, 10]


def test_a_drain_the_next_read_confirms_stops_the_clock():
    seen = [(0, 4), (10, 0), (20, 0), (30, 2), (40, 2)]
    assert _ages(seen) == [0, 10, 0, 0, 10]


def test_two_drops_in_three_reads_restart_the_clock_at_the_second():
    # Consumers as fast as the arrivals: the count goes up and down around a few messages.
    seen = [(0, 2), (10, 0), (20, 2), (30, 0), (40, 1), (50, 1)]
    assert _ages(seen) == [0, 10, 20, 0, 0, 10]


def test_an_unconfirmed_drop_is_forgotten_after_two_reads():
    # A dip, back up, steady: a later single drop does not confirm the old one.
    seen = [(0, 3), (10, 2), (20, 3), (30, 3), (40, 2), (50, 3), (60, 3)]
    assert _ages(seen) == [0, 10, 20, 30, 40, 50, 60]
