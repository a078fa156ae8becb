"""The generated promtool test files: one per SLO, one for the symptom alerts."""

from __future__ import annotations

from pathlib import Path

from conveyor_observability.paths import PROMTOOL_TESTS_DIR
from conveyor_observability.promtool_tests import render_test_file
from conveyor_observability.provenance import generated_header
from conveyor_observability.rule_files import alerting_rules, slo_rules_path, symptom_rules_path
from conveyor_observability.slo_tests import EVALUATION_INTERVAL, slo_scenarios
from conveyor_observability.spec import Spec
from conveyor_observability.symptom_tests import symptom_scenarios


def rendered_test_files(spec: Spec) -> dict[Path, str]:
    alerts = alerting_rules(spec)
    files = {}
    for slo in spec.slos:
        path = PROMTOOL_TESTS_DIR / f"slo-{slo.name}.test.yaml"
        files[path] = render_test_file(
            path,
            [slo_rules_path(spec, slo)],
            alerts,
            slo_scenarios(spec, slo),
            generated_header(
                "observability/slos.yaml (scenarios: conveyor_observability/slo_tests.py)"
            ),
            EVALUATION_INTERVAL,
        )
    path = PROMTOOL_TESTS_DIR / "symptoms.test.yaml"
    files[path] = render_test_file(
        path,
        [symptom_rules_path(spec)],
        alerts,
        symptom_scenarios(),
        generated_header("conveyor_observability/symptom_tests.py"),
    )
    return files
