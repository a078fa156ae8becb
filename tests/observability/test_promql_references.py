"""Every PromQL expression in rules, dashboards and runbooks parses, and names only metrics the
services export (services/conveyor/telemetry/metrics.py), recording rules we generate, or `up`."""

from __future__ import annotations

import pytest
from conveyor_observability import inventory
from conveyor_observability.promql import grafana_to_promql, metric_names
from conveyor_observability.promtool import check_expressions


def test_every_expression_parses(promtool: str) -> None:
    expressions = inventory.all_expressions()
    assert inventory.dashboard_expressions() and inventory.runbook_expressions()
    result = check_expressions(expressions)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_name_is_exported_recorded_or_up() -> None:
    undefined = inventory.undefined_metric_names()
    assert not undefined, "\n".join(
        f"{name}: {', '.join(sorted(set(where)))}" for name, where in sorted(undefined.items())
    )


def test_the_contract_is_read_as_a_scrape_would_show_it() -> None:
    exported = inventory.exported_metric_names()
    assert {
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "grpc_server_handling_seconds_count",
        "conveyor_queue_messages",
        "conveyor_task_queue_delay_seconds_sum",
    } <= exported
    assert "grpc_server_handled" not in exported
    assert "conveyor_queue_messages_total" not in exported


def test_every_slo_recording_is_used_by_an_alert_or_a_dashboard() -> None:
    used = inventory.referenced_metric_names()
    assert inventory.recording_rule_names() <= used.keys()


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('sum by (job) (up{job=~"conveyor-.*"}) == 0', {"up"}),
        ("sum(rate(a_total[5m])) by (le) / on (x) group_left b", {"a_total", "b"}),
        (
            'histogram_quantile(0.99, sum by (le) (rate(h_bucket{le!="+Inf"}[5m] offset 1h)))',
            {"h_bucket"},
        ),
        ("max_over_time(s[10m:1m]) > bool 2 unless ignoring (i) t", {"s", "t"}),
        (
            "slo:sli_error:ratio_rate5m{sloth_id='x'} / slo:error_budget:ratio",
            {"slo:sli_error:ratio_rate5m", "slo:error_budget:ratio"},
        ),
        ('label_replace(absent(m{job="a"}), "dst", "$1", "src", "(.*)")', {"m"}),
        (
            'count_values without (instance) ("v", build_info) # comment mentions fake_metric',
            {"build_info"},
        ),
        ("vector(1) * 1e3 + 0x1f", set()),
    ],
)
def test_metric_names_finds_series_not_functions_labels_or_keywords(
    expr: str, names: set[str]
) -> None:
    assert metric_names(expr) == names


def test_grafana_interval_variables_become_durations() -> None:
    assert grafana_to_promql("rate(x[$__rate_interval]) + rate(y[$__range])") == (
        "rate(x[5m]) + rate(y[5m])"
    )
