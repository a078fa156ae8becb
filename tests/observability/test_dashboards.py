"""Dashboards: loadable Grafana JSON, one Prometheus data source variable, every panel queried."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conveyor_observability.inventory import dashboard_files
from conveyor_observability.spec import Spec

DASHBOARDS = {path.name: path for path in dashboard_files()}


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_the_three_dashboards_exist_with_distinct_uids() -> None:
    assert sorted(DASHBOARDS) == [
        "conveyor-overview.json",
        "conveyor-queues.json",
        "conveyor-slos.json",
    ]
    uids = [_load(path)["uid"] for path in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_query_prometheus_through_the_datasource_variable(name: str) -> None:
    dashboard = _load(DASHBOARDS[name])
    (variable,) = dashboard["templating"]["list"]
    assert (variable["type"], variable["name"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], f"{panel['title']} has no query"
        assert all(t["expr"].strip() for t in panel["targets"])


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_have_unique_ids_and_fit_the_grid(name: str) -> None:
    panels = _load(DASHBOARDS[name])["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(set(ids)) == len(ids)
    for panel in panels:
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]


def test_golden_signals_are_on_the_overview() -> None:
    exprs = " ".join(
        target["expr"]
        for panel in _load(DASHBOARDS["conveyor-overview.json"])["panels"]
        for target in panel.get("targets", [])
    )
    assert "grpc_server_handled_total" in exprs  # traffic and errors
    assert "histogram_quantile(0.99, sum by (le) (rate(grpc_server_handling_seconds_bucket" in exprs
    assert "histogram_quantile(0.5, sum by (le) (rate(grpc_server_handling_seconds_bucket" in exprs
    assert "sum(conveyor_worker_inflight_tasks) / sum(conveyor_worker_concurrency_limit)" in exprs


def test_the_slo_dashboard_has_a_row_per_slo(spec: Spec) -> None:
    rows = [
        p["title"] for p in _load(DASHBOARDS["conveyor-slos.json"])["panels"] if p["type"] == "row"
    ]
    assert [row.split(":")[0] for row in rows] == [slo.name for slo in spec.slos]
