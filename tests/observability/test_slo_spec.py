"""The SLO spec: what it accepts, what it rejects, and what it turns into."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import yaml
from conveyor.telemetry import metrics
from conveyor_observability import inventory
from conveyor_observability.paths import SPEC_PATH
from conveyor_observability.rule_files import alerting_rules
from conveyor_observability.slo_rules import slo_rule_groups
from conveyor_observability.spec import (
    THRESHOLD_PLACEHOLDER,
    Slo,
    Spec,
    SpecError,
    bucket_label,
    parse_spec,
    readable_seconds,
)
from prometheus_client import Histogram
from prometheus_client.utils import floatToGoString

SLOTH_WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"]


@pytest.fixture
def raw_spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text())


def test_the_spec_defines_the_four_slos_with_their_objectives(spec: Spec) -> None:
    # Conveyor's own; a fork's per-type SLOs (@task slo=) come on top without a test edit.
    assert {slo.name: slo.objective for slo in spec.slos if slo.task_type is None} == {
        "api-availability": Decimal("99.9"),
        "api-latency": Decimal("99"),
        "task-success": Decimal("99.5"),
        "task-freshness": Decimal("99"),
    }


def test_the_workbook_policy_records_every_sloth_window(spec: Spec) -> None:
    assert spec.windows() == SLOTH_WINDOWS
    records = {
        rule.record
        for slo in spec.slos
        for group in slo_rule_groups(spec, slo)
        for rule in group.rules
        if hasattr(rule, "record")
    }
    assert {f"slo:sli_error:ratio_rate{w}" for w in SLOTH_WINDOWS} <= records
    assert {
        "slo:objective:ratio",
        "slo:error_budget:ratio",
        "slo:current_burn_rate:ratio",
        "slo:period_burn_rate:ratio",
        "slo:period_error_budget_remaining:ratio",
    } <= records


def test_long_windows_are_weighted_by_traffic_and_short_ones_read_raw_counters(spec: Spec) -> None:
    slo = spec.slos[0]
    exprs = {
        rule.labels["sloth_window"]: rule.expr
        for group in slo_rule_groups(spec, slo)
        for rule in group.rules
        if getattr(rule, "record", "").startswith("slo:sli_error:ratio_rate")
    }
    for window in ("1d", "3d", "30d"):
        assert "sum_over_time(slo:sli_errors:rate5m{" in exprs[window]
        assert "sum_over_time(slo:sli_events:rate5m{" in exprs[window]
        assert f"[{window}])" in exprs[window]
    for window in ("30m", "1h", "2h", "6h"):
        assert "grpc_server_handled_total" in exprs[window]
        assert f"[{window}]" in exprs[window]


def test_burn_alerts_pair_long_and_short_windows_with_a_traffic_guard(spec: Spec) -> None:
    page = alerting_rules(spec)["ConveyorApiAvailabilityBudgetBurnPage"]
    assert page.labels == {"severity": "page"}
    for window, short, factor in (("1h", "5m", "14.4"), ("6h", "30m", "6")):
        assert f"ratio_rate{window}{{" in page.expr and f"ratio_rate{short}{{" in page.expr
        assert f"> ({factor} * 0.001)" in page.expr
        assert "avg_over_time(slo:sli_events:rate5m{" in page.expr
        assert f"[{window}]) * 3600 >= 60" in page.expr
    ticket = alerting_rules(spec)["ConveyorTaskSuccessBudgetBurnTicket"]
    assert "> (3 * 0.005)" in ticket.expr and "> (1 * 0.005)" in ticket.expr


_BUCKET_SELECTOR_RE = re.compile(r'([a-z_:][a-z0-9_:]*)_bucket\{[^}]*\ble="([^"]*)"')


def _exported_bounds() -> dict[str, set[str]]:
    """Histogram name -> the `le` label values it exports, from metrics.py's own objects
    (prometheus_client has no public accessor for a labelled histogram's bounds)."""
    return {
        histogram.describe()[0].name: {floatToGoString(b) for b in histogram._upper_bounds}
        for histogram in vars(metrics).values()
        if isinstance(histogram, Histogram)
    }


def _bucket_selectors(slo: Slo) -> list[tuple[str, str]]:
    """(histogram, le) of every bucket `slo`'s queries and test series read."""
    texts = [slo.sli.errors, slo.sli.total, *slo.test_series.good, *slo.test_series.all]
    return [m for text in texts for m in _BUCKET_SELECTOR_RE.findall(text)]


def _bucket_problems(slo: Slo) -> list[str]:
    """Why `slo`'s threshold is not exactly a bucket boundary of the histogram(s) it reads."""
    selectors = _bucket_selectors(slo)
    if slo.threshold_seconds is None:
        return [f"{slo.name}: reads buckets without threshold_seconds"] if selectors else []
    if not selectors:
        return [f"{slo.name}: has threshold_seconds but reads no bucket"]
    bounds = _exported_bounds()
    le = bucket_label(slo.threshold_seconds)
    problems = []
    for histogram, label in selectors:
        if label != le:
            problems.append(f"{slo.name}: {histogram} read at le={label!r}, not at {le!r}")
        elif le not in bounds.get(histogram, set()):
            problems.append(f"{slo.name}: {histogram} has no bucket bounded at {le}")
    return problems


def test_each_slo_threshold_is_a_bucket_boundary_of_its_histogram(spec: Spec) -> None:
    assert {
        slo.name for slo in spec.slos if slo.threshold_seconds is not None and not slo.task_type
    } == {"api-latency", "task-freshness"}
    assert [problem for slo in spec.slos for problem in _bucket_problems(slo)] == []


def test_a_threshold_between_bucket_boundaries_is_caught(raw_spec: dict[str, Any]) -> None:
    for slo in raw_spec["slos"]:
        if "threshold_seconds" in slo:
            slo["threshold_seconds"] = float(slo["threshold_seconds"]) * 1.2
    problems = [p for slo in parse_spec(raw_spec).slos for p in _bucket_problems(slo)]
    assert len(problems) == 4  # each of the two SLOs reads its bucket in errors and test series
    assert all("has no bucket bounded at" in problem for problem in problems)


def test_rules_dashboards_and_runbooks_count_an_slo_histogram_at_its_threshold(
    spec: Spec,
) -> None:
    # A runbook that pastes the bucket itself must follow the spec when the threshold moves.
    threshold_le = {
        histogram: bucket_label(slo.threshold_seconds)
        for slo in spec.slos
        if slo.threshold_seconds is not None
        for histogram, _ in _bucket_selectors(slo)
    }
    expressions = inventory.all_expressions()
    read = [
        (where, histogram, le)
        for where, expr in expressions
        for histogram, le in _BUCKET_SELECTOR_RE.findall(expr)
        if histogram in threshold_le
    ]
    assert any(where.startswith("runbooks/") for where, _, _ in read)
    assert [r for r in read if r[2] != threshold_le[r[1]]] == []


def test_the_threshold_is_written_into_queries_series_and_description(spec: Spec) -> None:
    for slo in spec.slos:
        texts = [slo.description, slo.sli.errors, slo.sli.total, *slo.test_series.good]
        assert not any(THRESHOLD_PLACEHOLDER in text for text in texts)
    latency = spec.slo("api-latency")
    assert latency.threshold_seconds is not None
    assert f'le="{bucket_label(latency.threshold_seconds)}"' in latency.sli.errors
    assert f"within {readable_seconds(latency.threshold_seconds)}." in latency.description


@pytest.mark.parametrize(
    ("seconds", "le", "readable"),
    [("0.25", "0.25", "250 ms"), ("30", "30.0", "30 s"), ("1.5", "1.5", "1.5 s")],
)
def test_thresholds_are_spelled_as_the_exporter_and_a_reader_spell_them(
    seconds: str, le: str, readable: str
) -> None:
    assert (bucket_label(Decimal(seconds)), readable_seconds(Decimal(seconds))) == (le, readable)


def test_changing_the_runbook_base_url_moves_every_runbook_url(raw_spec: dict[str, Any]) -> None:
    raw_spec["runbook_base_url"] = "https://git.example.com/ops/conveyor/-/blob/main"
    forked = parse_spec(raw_spec)
    urls = {rule.annotations["runbook_url"] for rule in alerting_rules(forked).values()}
    fork = "https://git.example.com/ops/conveyor/-/blob/main/runbooks/"
    assert all(url.startswith(fork) for url in urls)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit that sets the spec entry at a dotted path ("slos.0.objective") to `value`."""

    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "complaint"),
    [
        (_set("slos.0.objective", 100), "objective: must be a percentage below 100"),
        (_set("slos.1.sli.total", "sum(rate(x[5m]))"), "must contain {{.window}}"),
        (_set("slos.2.owner", "me"), "unknown owner"),
        (lambda s: s["slos"][3].pop("min_events_per_hour"), "missing min_events_per_hour"),
        (_set("symptom_alerts.0.alert", "DlqNotEmpty"), "CamelCase starting with Conveyor"),
        (_set("symptom_alerts.1.severity", "critical"), "'critical' is not one of"),
        (_set("burn_rate_alerts.page.0.short_window", "2h"), "short_window must be shorter"),
        (_set("runbook_base_url", "https://example.com/"), "without a trailing '/'"),
        (lambda s: s["slos"].append(copy.deepcopy(s["slos"][0])), "duplicate SLO names"),
        (_set("slos.1.threshold_seconds", 0), "threshold_seconds: must be above 0"),
        (lambda s: s["slos"][1].pop("threshold_seconds"), "sets no threshold_seconds"),
        (_set("slos.0.threshold_seconds", 1), "never uses {{.threshold}}"),
    ],
)
def test_malformed_specs_are_rejected_with_the_reason(
    raw_spec: dict[str, Any], edit: Any, complaint: str
) -> None:
    edit(raw_spec)
    with pytest.raises(SpecError) as caught:
        parse_spec(raw_spec)
    assert complaint in str(caught.value)


def test_every_problem_is_reported_at_once(raw_spec: dict[str, Any]) -> None:
    raw_spec["slos"][0]["objective"] = 0
    raw_spec["symptom_alerts"][0]["for"] = "soon"
    with pytest.raises(SpecError) as caught:
        parse_spec(raw_spec)
    assert "slos[0].objective" in str(caught.value)
    assert "symptom_alerts[0].for" in str(caught.value)
