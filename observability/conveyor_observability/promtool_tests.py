"""promtool unit test files (`promtool test rules`) built from scenarios.

A scenario names its input series and, at chosen minutes, which instances of an alert must be
firing, by the labels the alert's expression yields. Expected annotations are filled in from the
rule itself: promtool compares them too, and copying them by hand would make every wording change
or runbook base URL change a test edit. Annotations may therefore only template `$labels`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from conveyor_observability.rules import AlertingRule
from conveyor_observability.yamlout import dump_yaml

INPUT_INTERVAL = "1m"
_LABEL_TEMPLATE_RE = re.compile(r"\{\{\s*\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class AlertCheck:
    """At `minute`, `alert` fires exactly once per label set in `firing` (none: silent)."""

    minute: int
    alert: str
    firing: Sequence[Mapping[str, str]] = ()


@dataclass(frozen=True)
class Scenario:
    name: str
    series: Mapping[str, str]  # series -> promtool values notation, one sample a minute
    checks: Sequence[AlertCheck]


def render_test_file(
    path: Path,
    rule_files: Sequence[Path],
    alerts: Mapping[str, AlertingRule],
    scenarios: Sequence[Scenario],
    header: str,
    evaluation_interval: str = "1m",
) -> str:
    """The promtool test file at `path` for `scenarios` against `rule_files`; rules are
    evaluated every `evaluation_interval`, input samples come once a minute."""
    document = {
        "rule_files": [os.path.relpath(rule_file, path.parent) for rule_file in rule_files],
        "evaluation_interval": evaluation_interval,
        "tests": [_test_group(scenario, alerts) for scenario in scenarios],
    }
    return dump_yaml(document, header)


def _test_group(scenario: Scenario, alerts: Mapping[str, AlertingRule]) -> dict[str, object]:
    return {
        "name": scenario.name,
        "interval": INPUT_INTERVAL,
        "input_series": [
            {"series": series, "values": values} for series, values in scenario.series.items()
        ],
        "alert_rule_test": [
            {
                "eval_time": f"{check.minute}m",
                "alertname": check.alert,
                "exp_alerts": [
                    _expected_alert(alerts[check.alert], labels) for labels in check.firing
                ],
            }
            for check in scenario.checks
        ],
    }


def _expected_alert(rule: AlertingRule, expr_labels: Mapping[str, str]) -> dict[str, object]:
    labels = {**expr_labels, **rule.labels}
    return {
        "exp_labels": labels,
        "exp_annotations": {
            key: render_label_templates(text, labels) for key, text in rule.annotations.items()
        },
    }


def render_label_templates(text: str, labels: Mapping[str, str]) -> str:
    """`text` with every `{{ $labels.x }}` replaced as Prometheus would render it."""
    rendered = _LABEL_TEMPLATE_RE.sub(lambda m: labels.get(m.group(1), ""), text)
    if "{{" in rendered:
        raise ValueError(f"annotation templates other than $labels cannot be expected: {text!r}")
    return rendered
