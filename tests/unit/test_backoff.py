"""Retry backoff (conveyor.worker.runner.backoff_seconds): full jitter over an exponential
ceiling, in whole seconds because it becomes an SQS visibility timeout.

The ceiling for the retry after attempt n (1-based) is min(cap, base * 2**(n-1)) — tenacity's
wait_random_exponential — so the first retry waits at most `base`.
"""

from __future__ import annotations

import statistics

import pytest
from conveyor.worker.runner import backoff_seconds
from hypothesis import given
from hypothesis import strategies as st

DRAWS = 2000


def ceiling(attempt: int, base: float, cap: float) -> float:
    return min(cap, base * 2 ** (attempt - 1))


@given(
    attempt=st.integers(min_value=1, max_value=40),
    base=st.floats(min_value=0.1, max_value=10),
    cap=st.floats(min_value=1, max_value=43_200),
)
def test_within_zero_and_the_exponential_ceiling(attempt: int, base: float, cap: float):
    value = backoff_seconds(attempt, base, cap)
    assert isinstance(value, int)
    assert 0 <= value <= round(ceiling(attempt, base, cap))
    assert value <= cap + 0.5  # never beyond the cap (SQS rejects visibility > 12 h)


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8])
def test_every_draw_is_bounded_and_the_draws_spread(attempt: int):
    high = ceiling(attempt, 1.0, 60.0)
    values = [backoff_seconds(attempt, 1.0, 60.0) for _ in range(DRAWS)]
    assert min(values) >= 0
    assert max(values) <= round(high)
    # Full jitter: the whole range is used, not a constant or a narrow band around it.
    assert len(set(values)) >= min(round(high) + 1, 20)
    assert min(values) == 0
    assert max(values) == round(high)
    # Uniform over [0, high]: the mean sits near high / 2 (loose bounds: no flakes).
    assert 0.35 * high <= statistics.fmean(values) <= 0.65 * high


def test_the_cap_limits_late_attempts_but_jitter_stays_full():
    values = [backoff_seconds(20, 1.0, 60.0) for _ in range(DRAWS)]
    assert max(values) <= 60
    assert max(values) >= 55
    assert min(values) <= 5
    assert len(set(values)) > 40


def test_base_scales_the_ceiling():
    values = [backoff_seconds(3, 5.0, 1000.0) for _ in range(DRAWS)]  # ceiling 20
    assert max(values) <= 20
    assert max(values) >= 18
