"""The worker's lane order (conveyor.worker.lanes): high first, and the default lane served by
at least one receive in K + 1 while the high lane is saturated."""

from __future__ import annotations

import pytest
from conveyor.domain import DEFAULT_LANE, LANES, lane_suffix
from conveyor.worker.lanes import LaneTurns


def _drain(turns: LaneTurns, has_messages: set[str], receives: int) -> list[str | None]:
    """What served each of `receives` receives when the lanes in `has_messages` never empty."""
    served: list[str | None] = []
    for _ in range(receives):
        order = turns.order()
        lane = next((name for name in order if name in has_messages), None)
        turns.served(order, lane)
        served.append(lane)
    return served


def test_the_high_lane_is_first_and_the_default_lane_the_default():
    assert LANES[0] == "high"
    assert DEFAULT_LANE in LANES
    assert LaneTurns(LANES, 3).order() == LANES


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_both_lanes_saturated_the_default_lane_gets_one_receive_in_k_plus_one(k: int):
    served = _drain(LaneTurns(LANES, k), set(LANES), 100 * (k + 1))
    assert served.count("default") == 100
    # Never more than K high receives in a row.
    run = 0
    for lane in served:
        run = run + 1 if lane == "high" else 0
        assert run <= k


def test_only_one_lane_busy_it_gets_every_receive():
    assert set(_drain(LaneTurns(LANES, 3), {"high"}, 40)) == {"high"}
    assert set(_drain(LaneTurns(LANES, 3), {"default"}, 40)) == {"default"}


def test_an_empty_default_lane_costs_one_turn_in_k_plus_one_not_every_receive():
    turns = LaneTurns(LANES, 3)
    firsts = []
    for _ in range(40):
        order = turns.order()
        firsts.append(order[0])
        turns.served(order, "high")  # the default lane had nothing
    assert firsts.count("default") == 10


def test_three_lanes_each_lower_lane_gets_its_turn():
    served = _drain(LaneTurns(("a", "b", "c"), 2), {"a", "b", "c"}, 300)
    assert all(served.count(lane) > 0 for lane in "abc")
    assert served.count("a") > served.count("b") > 0


def test_only_the_default_lane_keeps_the_names_from_before_lanes():
    assert lane_suffix(DEFAULT_LANE) == ""
    assert lane_suffix("high") == "_high"
    assert lane_suffix("high", "-") == "-high"
    with pytest.raises(ValueError):
        lane_suffix("urgent")
