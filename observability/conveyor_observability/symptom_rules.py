"""Symptom alerts from the spec, beside the SLO burn alerts."""

from __future__ import annotations

from conveyor_observability.rules import AlertingRule, RuleGroup
from conveyor_observability.spec import Spec, SymptomAlert


def symptom_rule_groups(spec: Spec) -> list[RuleGroup]:
    rules = [_rule(spec, alert) for alert in spec.symptom_alerts]
    return [RuleGroup(f"{spec.service}-symptoms", rules)] if rules else []


def _rule(spec: Spec, alert: SymptomAlert) -> AlertingRule:
    return AlertingRule(
        alert=alert.alert,
        expr=alert.expr,
        for_=alert.for_,
        labels={"severity": alert.severity},
        annotations={
            "summary": alert.summary,
            "description": alert.description,
            "runbook_url": spec.runbook_url(alert.alert),
        },
    )
