"""The generated rules files: which groups go in which file."""

from __future__ import annotations

from pathlib import Path

from conveyor_observability.paths import RULES_DIR
from conveyor_observability.provenance import generated_header
from conveyor_observability.rules import AlertingRule, RuleGroup, render_rules_file
from conveyor_observability.slo_rules import slo_rule_groups
from conveyor_observability.spec import Slo, Spec
from conveyor_observability.symptom_rules import symptom_rule_groups

HEADER = generated_header("observability/slos.yaml")


def slo_rules_path(spec: Spec, slo: Slo) -> Path:
    """One file per SLO, as Sloth writes them: a test loads only the rules it exercises."""
    return RULES_DIR / f"{spec.sloth_id(slo)}.slo.rules.yaml"


def symptom_rules_path(spec: Spec) -> Path:
    return RULES_DIR / f"{spec.service}-symptoms.rules.yaml"


def rule_groups_by_file(spec: Spec) -> dict[Path, list[RuleGroup]]:
    files = {slo_rules_path(spec, slo): slo_rule_groups(spec, slo) for slo in spec.slos}
    files[symptom_rules_path(spec)] = symptom_rule_groups(spec)
    return files


def alerting_rules(spec: Spec) -> dict[str, AlertingRule]:
    """Every alert the spec generates, by name."""
    return {
        rule.alert: rule
        for groups in rule_groups_by_file(spec).values()
        for group in groups
        for rule in group.rules
        if isinstance(rule, AlertingRule)
    }


def rendered_rule_files(spec: Spec) -> dict[Path, str]:
    return {
        path: render_rules_file(groups, HEADER)
        for path, groups in rule_groups_by_file(spec).items()
    }
