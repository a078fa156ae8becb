"""What the observability artefacts on disk reference, for consistency checks now and for the
live-scrape and end-to-end tests later: rules files, alerts, expressions and metric names."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from conveyor_observability.paths import DASHBOARDS_DIR, REPO_ROOT, RULES_DIR
from conveyor_observability.promql import grafana_to_promql, metric_names
from conveyor_observability.runbooks import load_runbooks

METRICS_MODULE = "conveyor.telemetry.metrics"
# Series each metric type exposes, by prometheus_client family type.
_SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}
# Scrape-generated series that no exporter defines.
SCRAPE_SERIES = frozenset({"up"})


def rules_files() -> list[Path]:
    """Every rules file Amazon Managed Prometheus receives."""
    return sorted(RULES_DIR.glob("*.yaml"))


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def _where(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def rules() -> Iterator[tuple[str, dict[str, Any]]]:
    """(file, rule) for every rule in every rules file."""
    for path in rules_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                yield _where(path), rule


def alerting_rules() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for _, rule in rules() if "alert" in rule}


def recording_rule_names() -> set[str]:
    return {rule["record"] for _, rule in rules() if "record" in rule}


def rule_expressions() -> list[tuple[str, str]]:
    return [
        (f"{where}: {rule.get('alert', rule.get('record'))}", rule["expr"])
        for where, rule in rules()
    ]


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_expressions() -> list[tuple[str, str]]:
    """Every panel query as PromQL (Grafana interval variables replaced)."""
    found = []
    for path in dashboard_files():
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard.get("panels", [])):
            for target in panel.get("targets", []):
                where = f"{_where(path)}: {panel['title']} ({target['refId']})"
                found.append((where, grafana_to_promql(target["expr"])))
    return found


def runbook_expressions() -> list[tuple[str, str]]:
    """Every ```promql block of every runbook."""
    return [
        (f"{_where(runbook.path)}:{block.line}", block.text)
        for runbook in load_runbooks()
        for block in runbook.code("promql")
    ]


def all_expressions() -> list[tuple[str, str]]:
    return rule_expressions() + dashboard_expressions() + runbook_expressions()


def referenced_metric_names() -> dict[str, list[str]]:
    """Metric name -> where it is used, over rules, dashboards and runbooks."""
    used: dict[str, list[str]] = {}
    for where, expr in all_expressions():
        for name in metric_names(expr):
            used.setdefault(name, []).append(where)
    return used


def exported_metric_names(registry: CollectorRegistry = REGISTRY) -> set[str]:
    """Series names the services' metrics contract exposes: the contract module's metrics (and
    the client's default process/platform collectors) as a scrape would show them. Metrics one
    process owns are registered only there (metrics.export), so the module's own are read too."""
    module = importlib.import_module(METRICS_MODULE)
    owned = [m for m in vars(module).values() if isinstance(m, MetricWrapperBase)]
    names: set[str] = set()
    for family in [*registry.collect(), *(f for m in owned for f in m.collect())]:
        names.update(family.name + suffix for suffix in _SAMPLE_SUFFIXES.get(family.type, ("",)))
    return names


def undefined_metric_names() -> dict[str, list[str]]:
    """Names used by rules, dashboards or runbooks that nothing defines, with where."""
    known = exported_metric_names() | recording_rule_names() | SCRAPE_SERIES
    return {name: where for name, where in referenced_metric_names().items() if name not in known}
