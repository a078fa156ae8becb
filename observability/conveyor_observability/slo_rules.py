"""Sloth-style SLO recording rules and multi-window, multi-burn-rate alerts.

Per SLO, three groups (as Sloth lays them out): SLI recordings, meta recordings (objective,
budget, burn rates) and the page/ticket burn alerts.
"""

from __future__ import annotations

from decimal import Decimal
from textwrap import indent

from conveyor_observability import durations
from conveyor_observability.rules import AlertingRule, RecordingRule, RuleGroup
from conveyor_observability.spec import BASE_WINDOW, BurnWindow, Slo, Spec, camel_case

# Windows from one day up are summed from the 5-minute recordings instead of rate() over days of
# raw samples, which is what makes SLO rules expensive to evaluate.
WEIGHTED_FROM_SECONDS = 86_400

ERRORS_RATE = f"slo:sli_errors:rate{BASE_WINDOW}"
EVENTS_RATE = f"slo:sli_events:rate{BASE_WINDOW}"
OBJECTIVE = "slo:objective:ratio"
ERROR_BUDGET = "slo:error_budget:ratio"
CURRENT_BURN_RATE = "slo:current_burn_rate:ratio"
PERIOD_BURN_RATE = "slo:period_burn_rate:ratio"
PERIOD_BUDGET_REMAINING = "slo:period_error_budget_remaining:ratio"
SLO_LABELS = ("sloth_id", "sloth_service", "sloth_slo")
_SPEED = {"page": "fast", "ticket": "steadily"}
# Severities whose pairs wait for data as old as their long window (see _burn_condition).
COVERED_SEVERITIES = frozenset({"ticket"})


def error_ratio_record(window: str) -> str:
    return f"slo:sli_error:ratio_rate{window}"


def burn_alert_name(spec: Spec, slo: Slo, severity: str) -> str:
    """E.g. ConveyorApiAvailabilityBudgetBurnPage."""
    return f"{spec.alert_prefix}{camel_case(slo.name)}BudgetBurn{severity.capitalize()}"


def slo_rule_groups(spec: Spec, slo: Slo) -> list[RuleGroup]:
    return [_sli_recordings(spec, slo), _meta_recordings(spec, slo), _alerts(spec, slo)]


def number(value: Decimal) -> str:
    """A Decimal as a plain PromQL literal: 0.001, 14.4, 6."""
    return format(value.normalize(), "f")


def slo_labels(spec: Spec, slo: Slo) -> dict[str, str]:
    """The labels of every series recorded for `slo` (and of its burn alerts)."""
    return {"sloth_id": spec.sloth_id(slo), "sloth_service": spec.service, "sloth_slo": slo.name}


def _selector(spec: Spec, slo: Slo) -> str:
    return f'{{sloth_id="{spec.sloth_id(slo)}"}}'


def _block(expr: str) -> str:
    return "(\n" + indent(expr, "  ") + "\n)"


def _sli_recordings(spec: Spec, slo: Slo) -> RuleGroup:
    labels = slo_labels(spec, slo)
    rules = [
        RecordingRule(
            ERRORS_RATE,
            slo.sli.errors_over(BASE_WINDOW) + "\nor\nvector(0)",
            {**labels, "sloth_window": BASE_WINDOW},
        ),
        RecordingRule(
            EVENTS_RATE, slo.sli.total_over(BASE_WINDOW), {**labels, "sloth_window": BASE_WINDOW}
        ),
    ]
    for window in spec.windows():
        rules.append(
            RecordingRule(
                error_ratio_record(window),
                _error_ratio(spec, slo, window),
                {**labels, "sloth_window": window},
            )
        )
    return RuleGroup(f"{spec.sloth_id(slo)}-sli-recordings", rules)


def _error_ratio(spec: Spec, slo: Slo, window: str) -> str:
    selector = _selector(spec, slo)
    if window == BASE_WINDOW:
        return f"{ERRORS_RATE}{selector}\n/\n{EVENTS_RATE}{selector}"
    if durations.seconds(window) >= WEIGHTED_FROM_SECONDS:
        return (
            f"sum_over_time({ERRORS_RATE}{selector}[{window}])\n"
            f"/\nsum_over_time({EVENTS_RATE}{selector}[{window}])"
        )
    errors = _block(slo.sli.errors_over(window) + "\nor\nvector(0)")
    return f"{errors}\n/\n{_block(slo.sli.total_over(window))}"


def _meta_recordings(spec: Spec, slo: Slo) -> RuleGroup:
    labels = slo_labels(spec, slo)
    selector = _selector(spec, slo)
    on_slo = f"on ({', '.join(SLO_LABELS)}) group_left"
    rules = [
        RecordingRule(OBJECTIVE, f"vector({number(slo.objective_ratio)})", labels),
        RecordingRule(ERROR_BUDGET, f"vector({number(slo.error_budget)})", labels),
        RecordingRule(
            CURRENT_BURN_RATE,
            f"{error_ratio_record(BASE_WINDOW)}{selector}\n/ {on_slo}\n{ERROR_BUDGET}{selector}",
            labels,
        ),
        RecordingRule(
            PERIOD_BURN_RATE,
            f"{error_ratio_record(spec.period)}{selector}\n/ {on_slo}\n{ERROR_BUDGET}{selector}",
            labels,
        ),
        RecordingRule(PERIOD_BUDGET_REMAINING, f"1 - {PERIOD_BURN_RATE}{selector}", labels),
    ]
    return RuleGroup(f"{spec.sloth_id(slo)}-meta-recordings", rules)


def _alerts(spec: Spec, slo: Slo) -> RuleGroup:
    rules = [
        _burn_alert(spec, slo, severity, pairs) for severity, pairs in spec.burn_rate_alerts.items()
    ]
    return RuleGroup(f"{spec.sloth_id(slo)}-alerts", rules)


def _burn_alert(spec: Spec, slo: Slo, severity: str, pairs: tuple[BurnWindow, ...]) -> AlertingRule:
    name = burn_alert_name(spec, slo, severity)
    return AlertingRule(
        alert=name,
        expr="\nor\n".join(
            _block(_burn_condition(spec, slo, pair, covered=severity in COVERED_SEVERITIES))
            for pair in pairs
        ),
        labels={"severity": severity},
        annotations={
            "summary": f"The {slo.name} SLO is burning its {spec.period} error budget "
            f"{_SPEED[severity]}.",
            "description": _burn_description(spec, slo, pairs),
            "runbook_url": spec.runbook_url(name),
        },
    )


def _burn_condition(spec: Spec, slo: Slo, pair: BurnWindow, *, covered: bool) -> str:
    """Both windows above the burn threshold, and enough traffic in the long window to trust
    the ratio. `max without (sloth_window)` lets the differently labelled windows meet.

    `covered`: the long window must also hold data from its start (events recorded a long
    window ago), so a ticket, the slower signal, stays silent on a Prometheus younger than its
    window instead of firing beside the page on minutes of data (issue 17)."""
    selector = _selector(spec, slo)
    threshold = f"({number(pair.burn_rate)} * {number(slo.error_budget)})"
    per_hour = 3600
    terms = [
        f"{error_ratio_record(pair.long_window)}{selector} > {threshold}",
        f"{error_ratio_record(pair.short_window)}{selector} > {threshold}",
        f"avg_over_time({EVENTS_RATE}{selector}[{pair.long_window}]) * {per_hour}"
        f" >= {number(slo.min_events_per_hour)}",
    ]
    if covered:
        since = durations.seconds(pair.long_window) - durations.seconds(pair.short_window)
        terms.append(
            f"present_over_time({EVENTS_RATE}{selector}[{pair.short_window}]"
            f" offset {durations.text(since)})"
        )
    return "\nand\n".join(f"max without (sloth_window) ({term})" for term in terms)


def _burn_description(spec: Spec, slo: Slo, pairs: tuple[BurnWindow, ...]) -> str:
    period_seconds = durations.seconds(spec.period)
    branches = [
        f"above {number(pair.burn_rate)}x the budget over both {pair.long_window} and "
        f"{pair.short_window} (at that pace the budget lasts "
        f"{_days(period_seconds / float(pair.burn_rate))})"
        for pair in pairs
    ]
    return (
        f"{slo.description} Error budget: {number(100 - slo.objective)}% of events over "
        f"{spec.period}. The error ratio is {' or '.join(branches)}, with at least "
        f"{number(slo.min_events_per_hour)} events per hour."
    )


def _days(seconds: float) -> str:
    days = round(seconds / 86_400, 1)
    return f"{days:g} day" + ("" if days == 1 else "s")
