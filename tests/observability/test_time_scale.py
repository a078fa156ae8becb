"""The drill's rules: the shipped ones with every duration divided by one factor."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conveyor_observability.rule_files import alerting_rules
from conveyor_observability.spec import Spec
from conveyor_observability.time_scale import scaled, scaled_rule_files, scaled_spec


def test_every_wait_is_divided_and_every_threshold_kept(spec: Spec) -> None:
    fast = alerting_rules(scaled_spec(spec, 60))
    shipped = alerting_rules(spec)
    assert fast.keys() == shipped.keys()
    assert fast["ConveyorComponentDown"].for_ == "5s"
    assert fast["ConveyorTasksNotConsumed"].expr == shipped["ConveyorTasksNotConsumed"].expr
    assert "[2s]" in fast["ConveyorCircuitBreakerOpen"].expr
    page = fast["ConveyorTaskSuccessBudgetBurnPage"].expr
    assert "ratio_rate1m" in page and "ratio_rate5s" in page and "ratio_rate1h" not in page
    assert "offset 22m" in fast["ConveyorTaskSuccessBudgetBurnTicket"].expr


def test_a_factor_that_leaves_fractions_of_a_second_is_refused() -> None:
    with pytest.raises(ValueError, match="whole number of seconds"):
        scaled("5m", 7)


def test_promtool_accepts_the_scaled_rules(promtool: str, spec: Spec, tmp_path: Path) -> None:
    files = scaled_rule_files(spec, 60, tmp_path)
    for path, text in files.items():
        path.write_text(text)
    done = subprocess.run(
        [promtool, "check", "rules", *map(str, files)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
