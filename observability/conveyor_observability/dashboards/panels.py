"""Building blocks shared by the Conveyor dashboards: one Prometheus data source variable, the
panel kinds the dashboards use, and deterministic JSON output."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ReduceDataOptions,
    VizLegendOptions,
    VizTooltipOptions,
)
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    GraphTresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
)

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Grafana picks a rate() window that covers at least four scrapes at any zoom level.
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


def new_dashboard(uid: str, title: str, description: str) -> db.Dashboard:
    return (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["conveyor"])
        .time("now-6h", "now")
        .refresh("1m")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .readonly()
        .with_variable(db.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )


def row(title: str) -> db.Row:
    return db.Row(title)


def _legend() -> VizLegendOptions:
    return (
        VizLegendOptions()
        .display_mode(LegendDisplayMode.LIST)
        .placement(LegendPlacement.BOTTOM)
        .show_legend(True)
    )


def _tooltip() -> VizTooltipOptions:
    """Every series at the hovered time, largest first: the one that matters is on top."""
    return VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)


def _targets(queries: Sequence[Query]) -> list[cogbuilder.Builder[cogvariants.Dataquery]]:
    refs = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return [
        prometheus.Dataquery().expr(q.expr).legend_format(q.legend or "__auto").ref_id(refs[i])
        for i, q in enumerate(queries)
    ]


def _thresholds(steps: Sequence[tuple[float | None, str]]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def graph(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    width: int = 12,
    lines: Sequence[float] = (),
) -> timeseries.Panel:
    """A time series; `lines` draws dashed reference lines (SLO thresholds, alert limits)."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(8)
        .targets(_targets(queries))
        .legend(_legend())
        .tooltip(_tooltip())
    )
    if lines:
        panel = panel.thresholds(
            _thresholds([(None, "transparent"), *[(value, "red") for value in lines]])
        ).thresholds_style(GraphThresholdsStyleConfig().mode(GraphTresholdsStyleMode.DASHED))
    return panel


def single_stat(
    title: str,
    description: str,
    unit: str,
    query: Query,
    steps: Sequence[tuple[float | None, str]],
    *,
    width: int = 6,
) -> stat.Panel:
    """One number, coloured by `steps` ((lower bound or None, colour), ascending)."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(4)
        .targets(_targets([query]))
        .thresholds(_thresholds(steps))
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def states(
    title: str,
    description: str,
    query: Query,
    names: dict[int, tuple[str, str]],
    *,
    width: int = 12,
) -> statetimeline.Panel:
    """A state timeline for an enum gauge; `names` maps each value to (text, colour)."""
    mapping = ValueMap(
        options={
            str(value): ValueMappingResult(text=text, color=color, index=index)
            for index, (value, (text, color)) in enumerate(sorted(names.items()))
        }
    )
    return (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(width)
        .height(8)
        .targets(_targets([query]))
        .mappings([mapping])
        .merge_values(True)
        .legend(_legend())
        .tooltip(_tooltip())
    )


def render(dashboard: db.Dashboard) -> str:
    """Dashboard JSON with panel ids numbered in layout order, stable across runs."""
    model = dashboard.build()
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    return json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
