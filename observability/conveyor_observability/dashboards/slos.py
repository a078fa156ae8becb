"""SLOs and error budgets, one row per SLO of the spec, all from the recording rules."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from conveyor_observability.dashboards.panels import Query, graph, new_dashboard, row, single_stat
from conveyor_observability.slo_rules import (
    CURRENT_BURN_RATE,
    ERROR_BUDGET,
    OBJECTIVE,
    PERIOD_BUDGET_REMAINING,
    PERIOD_BURN_RATE,
    SLO_LABELS,
    error_ratio_record,
)
from conveyor_observability.spec import Slo, Spec


def slo_dashboard(spec: Spec) -> db.Dashboard:
    dashboard = new_dashboard(
        f"{spec.service}-slos",
        "Conveyor / SLOs and error budgets",
        f"Each SLO's error budget over {spec.period} and how fast it burns; generated from "
        "observability/slos.yaml.",
    )
    for slo in spec.slos:
        dashboard = _slo_row(dashboard, spec, slo)
    return dashboard


def _slo_row(dashboard: db.Dashboard, spec: Spec, slo: Slo) -> db.Dashboard:
    selector = f'{{sloth_id="{spec.sloth_id(slo)}"}}'
    on_slo = f"on ({', '.join(SLO_LABELS)}) group_left"
    long_windows = sorted(
        {pair.long_window for pairs in spec.burn_rate_alerts.values() for pair in pairs},
        key=spec.windows().index,
    )
    factors = sorted(
        {float(pair.burn_rate) for pairs in spec.burn_rate_alerts.values() for pair in pairs}
    )
    return (
        dashboard.with_row(row(f"{slo.name}: {slo.description}"))
        .with_panel(
            single_stat(
                "Objective",
                slo.description,
                "percentunit",
                Query(f"{OBJECTIVE}{selector}"),
                [(None, "blue")],
            )
        )
        .with_panel(
            single_stat(
                f"Error budget left ({spec.period})",
                "Share of the period's error budget not yet spent; below 0 the SLO is missed.",
                "percentunit",
                Query(f"{PERIOD_BUDGET_REMAINING}{selector}"),
                [(None, "red"), (0, "orange"), (0.25, "green")],
            )
        )
        .with_panel(
            single_stat(
                "Burn rate now (5m)",
                "Error ratio over the last 5 minutes / error budget: at 1 the budget lasts "
                "exactly the period.",
                "none",
                Query(f"{CURRENT_BURN_RATE}{selector}"),
                [(None, "green"), (1, "orange"), (factors[-1], "red")],
            )
        )
        .with_panel(
            single_stat(
                f"Burn rate over {spec.period}",
                "Above 1 the SLO will be missed for this period.",
                "none",
                Query(f"{PERIOD_BURN_RATE}{selector}"),
                [(None, "green"), (1, "red")],
            )
        )
        .with_panel(
            graph(
                "Error ratio by window",
                "The SLI's error ratio over each recorded window, against the error budget.",
                "percentunit",
                [
                    *[
                        Query(f"{error_ratio_record(window)}{selector}", window)
                        for window in spec.windows()
                    ],
                    Query(f"{ERROR_BUDGET}{selector}", "error budget"),
                ],
            )
        )
        .with_panel(
            graph(
                "Burn rate by alert window",
                "Error ratio / error budget over each alert's long window; dashed lines are the "
                "burn-rate thresholds of the page and ticket alerts.",
                "none",
                [
                    Query(
                        f"{error_ratio_record(window)}{selector}\n/ {on_slo}\n"
                        f"{ERROR_BUDGET}{selector}",
                        window,
                    )
                    for window in long_windows
                ],
                lines=factors,
            )
        )
    )
