"""Grafana dashboards as code (grafana-foundation-sdk), rendered to observability/dashboards/."""

from __future__ import annotations

from pathlib import Path

from conveyor_observability.dashboards.overview import overview_dashboard
from conveyor_observability.dashboards.panels import render
from conveyor_observability.dashboards.queues import queues_dashboard
from conveyor_observability.dashboards.slos import slo_dashboard
from conveyor_observability.paths import DASHBOARDS_DIR
from conveyor_observability.spec import Spec


def rendered_dashboards(spec: Spec) -> dict[Path, str]:
    builders = {
        "overview": overview_dashboard(spec),
        "slos": slo_dashboard(spec),
        "queues": queues_dashboard(spec),
    }
    return {
        DASHBOARDS_DIR / f"{spec.service}-{name}.json": render(builder)
        for name, builder in builders.items()
    }
