"""The pieces the promtool test files are built from."""

from __future__ import annotations

from decimal import Decimal

import pytest
from conveyor_observability.promtool_tests import render_label_templates
from conveyor_observability.series import cumulative
from conveyor_observability.slo_tests import BurnOracle, Phase
from conveyor_observability.spec import BurnWindow

POLICY = {"page": [BurnWindow("1h", "5m", Decimal("14.4"))]}


def test_cumulative_series_continue_across_phases() -> None:
    # minutes 0-3 grow by 10, minutes 4-5 by 5, minute 6 by 1
    assert cumulative([(3, Decimal(10)), (2, Decimal(5)), (1, Decimal(1))]) == "0+10x3 35+5x1 41"


def test_cumulative_series_keep_exact_decimals() -> None:
    assert cumulative([(2, Decimal("0.1")), (2, Decimal("0.2"))]) == "0+0.1x2 0.4+0.2x1"


def test_label_templates_render_like_prometheus() -> None:
    labels = {"job": "conveyor-api", "dependency": "dynamodb"}
    text = "{{ $labels.dependency }} in {{$labels.job}}, {{ $labels.missing }}."
    assert render_label_templates(text, labels) == "dynamodb in conveyor-api, ."


def test_value_templates_cannot_be_expected() -> None:
    with pytest.raises(ValueError, match="other than \\$labels"):
        render_label_templates("DLQ holds {{ $value }} messages", {})


def test_oracle_averages_over_the_window_or_the_history_it_has() -> None:
    oracle = BurnOracle(
        [Phase(60, Decimal(0)), Phase(60, Decimal(30))], POLICY, Decimal(100), Decimal(60)
    )
    assert oracle.burn_over(30, "1h") == 0
    assert oracle.burn_over(90, "1h") == 15
    assert oracle.burn_over(120, "5m") == 30


def test_oracle_fires_only_when_both_windows_burn_and_traffic_is_enough() -> None:
    phases = [Phase(60, Decimal(0)), Phase(60, Decimal(30))]
    oracle = BurnOracle(phases, POLICY, Decimal(100), Decimal(60))
    # At minute 89 the last hour holds 29 minutes at 30x: 14.5x, over 14.4x; at 88, 14x.
    assert oracle.first("page", 60, firing=True) == 89
    assert not oracle.fires("page", 88)
    quiet = BurnOracle(phases, POLICY, Decimal("0.5"), Decimal(60))  # 30 events an hour
    assert not any(quiet.fires("page", minute) for minute in range(1, 121))
