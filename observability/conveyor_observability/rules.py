"""Prometheus rule files: the rule model and its YAML rendering."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from conveyor_observability.yamlout import dump_yaml


@dataclass(frozen=True)
class RecordingRule:
    record: str
    expr: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"record": self.record, "expr": self.expr}
        if self.labels:
            out["labels"] = dict(self.labels)
        return out


@dataclass(frozen=True)
class AlertingRule:
    alert: str
    expr: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    for_: str | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"alert": self.alert, "expr": self.expr}
        if self.for_:
            out["for"] = self.for_
        out["labels"] = dict(self.labels)
        out["annotations"] = dict(self.annotations)
        return out


Rule = RecordingRule | AlertingRule


@dataclass(frozen=True)
class RuleGroup:
    name: str
    rules: Sequence[Rule]

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "rules": [rule.to_dict() for rule in self.rules]}


def render_rules_file(groups: Sequence[RuleGroup], header: str) -> str:
    """A rules file as `promtool check rules` and Amazon Managed Prometheus read it."""
    return dump_yaml({"groups": [group.to_dict() for group in groups]}, header)
