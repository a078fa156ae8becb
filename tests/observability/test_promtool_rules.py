"""promtool on the rules: they load, their unit tests pass, and the unit tests fail when the
rules are broken in the ways that matter (so a green run means something)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from conveyor_observability import promtool as pt
from conveyor_observability.inventory import alerting_rules, rules_files
from conveyor_observability.paths import PROMTOOL_TESTS_DIR, RULES_DIR
from conveyor_observability.spec import SEVERITIES, Spec

TEST_FILES = sorted(PROMTOOL_TESTS_DIR.glob("*.test.yaml"))


def _names(paths: list[Path]) -> list[str]:
    return [path.name for path in paths]


@pytest.fixture(scope="session")
def unit_test_results(promtool: str) -> dict[str, subprocess.CompletedProcess[str]]:
    return pt.run_parallel({path.name: partial(pt.run_rule_tests, path) for path in TEST_FILES})


def test_every_rules_file_loads(promtool: str) -> None:
    result = pt.check_rules(rules_files())
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", _names(TEST_FILES))
def test_promtool_unit_tests_pass(
    test_file: str, unit_test_results: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = unit_test_results[test_file]
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # promtool only warns about a rules file it cannot find, and then tests nothing.
    assert "WARNING" not in output, output


def test_every_rules_file_is_exercised_by_a_test_file() -> None:
    loaded = {
        (PROMTOOL_TESTS_DIR / rule_file).resolve()
        for path in TEST_FILES
        for rule_file in yaml.safe_load(path.read_text())["rule_files"]
    }
    assert all(path.is_file() for path in loaded), loaded
    assert set(rules_files()) <= loaded


def _alert_checks() -> dict[str, list[dict[str, Any]]]:
    checks: dict[str, list[dict[str, Any]]] = {}
    for path in TEST_FILES:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for check in group.get("alert_rule_test", []):
                checks.setdefault(check["alertname"], []).append(check)
    return checks


@pytest.mark.parametrize("alert", sorted(alerting_rules()))
def test_every_alert_is_tested_firing_and_silent(alert: str) -> None:
    checks = _alert_checks().get(alert, [])
    assert any(check["exp_alerts"] for check in checks), f"{alert} is never tested firing"
    assert any(not check["exp_alerts"] for check in checks), f"{alert} is never tested silent"


@pytest.mark.parametrize("alert", sorted(alerting_rules()))
def test_every_alert_carries_severity_summary_description_and_runbook(
    alert: str, spec: Spec
) -> None:
    rule = alerting_rules()[alert]
    assert re.fullmatch(r"Conveyor([A-Z][a-z0-9]*)+", alert)
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"]["summary"].strip()
    assert rule["annotations"]["description"].strip()
    assert rule["annotations"]["runbook_url"] == f"{spec.runbook_base_url}/runbooks/{alert}.md"


@dataclass(frozen=True)
class Mutation:
    """Breaks one property the unit tests claim to check: `original` becomes `mutated` in
    `rules_file`, and the scenarios of `test_file` whose name contains `scenarios` must fail."""

    rules_file: str
    original: str
    mutated: str
    test_file: str
    scenarios: str


MUTATIONS = {
    "low-traffic guard removed": Mutation(
        "conveyor-api-availability.slo.rules.yaml",
        "[1h]) * 3600 >= 60)",
        "[1h]) * 3600 >= 0)",
        "slo-api-availability.test.yaml",
        "low-traffic guard",
    ),
    "page ignores its 5m short window": Mutation(
        "conveyor-api-availability.slo.rules.yaml",
        'ratio_rate5m{sloth_id="conveyor-api-availability"} > (14.4 * 0.001)',
        'ratio_rate1h{sloth_id="conveyor-api-availability"} > (14.4 * 0.001)',
        "slo-api-availability.test.yaml",
        "threshold of 14.4x",
    ),
    "ticket fires at half the burn it should": Mutation(
        "conveyor-task-freshness.slo.rules.yaml",
        "> (1 * 0.01))",  # both windows of the 3d/6h pair
        "> (0.5 * 0.01))",
        "slo-task-freshness.test.yaml",
        "just under every threshold",
    ),
    "client errors burn the availability budget": Mutation(
        "conveyor-api-availability.slo.rules.yaml",
        'grpc_code=~"Unknown|Internal|',
        'grpc_code=~"InvalidArgument|NotFound|Unknown|Internal|',
        "sli-scope.test.yaml",
        "client errors",
    ),
    "1d window averages ratios instead of weighting by traffic": Mutation(
        "conveyor-task-success.slo.rules.yaml",
        'sum_over_time(slo:sli_errors:rate5m{sloth_id="conveyor-task-success"}[1d])\n'
        "      /\n"
        '      sum_over_time(slo:sli_events:rate5m{sloth_id="conveyor-task-success"}[1d])',
        'avg_over_time(slo:sli_error:ratio_rate5m{sloth_id="conveyor-task-success"}[1d])',
        "sli-scope.test.yaml",
        "weighs each period",
    ),
    "DLQ alert fires without waiting": Mutation(
        "conveyor-symptoms.rules.yaml",
        'conveyor_queue_messages{queue="dlq"})) > 0\n    for: 5m',
        'conveyor_queue_messages{queue="dlq"})) > 0\n    for: 0m',
        "symptoms.test.yaml",
        "DLQ",
    ),
    "the DLQ alert adds up the lanes": Mutation(
        "conveyor-symptoms.rules.yaml",
        "max by (lane) (sum by (job, instance, lane) (conveyor_queue_messages",
        "max(sum by (job, instance) (conveyor_queue_messages",
        "symptoms.test.yaml",
        "each lane's DLQ",
    ),
    "the not-consumed page takes the oldest head of any lane": Mutation(
        "conveyor-symptoms.rules.yaml",
        "max by (lane) (conveyor_queue_oldest_age_seconds",
        "max(conveyor_queue_oldest_age_seconds",
        "symptoms.test.yaml",
        "high lane alone",
    ),
    "stalled workers do not page until the queue's head is ten minutes old": Mutation(
        "conveyor-symptoms.rules.yaml",
        'conveyor_queue_oldest_age_seconds{queue="main"}) > 60',
        'conveyor_queue_oldest_age_seconds{queue="main"}) > 600',
        "symptoms.test.yaml",
        "workers are stalled",
    ),
    "a ticket fires on a Prometheus younger than its windows": Mutation(
        "conveyor-task-success.slo.rules.yaml",
        "        and\n"
        "        max without (sloth_window) (present_over_time("
        'slo:sli_events:rate5m{sloth_id="conveyor-task-success"}[6h] offset 66h))\n',
        "",
        "slo-task-success.test.yaml",
        "pages alone",
    ),
}


@pytest.fixture(scope="session")
def mutation_results(
    promtool: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, subprocess.CompletedProcess[str]]:
    jobs = {}
    for name, mutation in MUTATIONS.items():
        root = tmp_path_factory.mktemp("mutant")
        shutil.copytree(RULES_DIR, root / RULES_DIR.name)
        (root / PROMTOOL_TESTS_DIR.name).mkdir()
        rules_path = root / RULES_DIR.name / mutation.rules_file
        text = rules_path.read_text()
        assert mutation.original in text, f"mutation {name!r} no longer applies: update it"
        rules_path.write_text(text.replace(mutation.original, mutation.mutated))
        suite = yaml.safe_load((PROMTOOL_TESTS_DIR / mutation.test_file).read_text())
        suite["tests"] = [t for t in suite["tests"] if mutation.scenarios in t["name"]]
        assert suite["tests"], f"mutation {name!r}: no scenario matches {mutation.scenarios!r}"
        test_path = root / PROMTOOL_TESTS_DIR.name / mutation.test_file
        test_path.write_text(yaml.safe_dump(suite, sort_keys=False))
        jobs[name] = partial(pt.run_rule_tests, test_path)
    return pt.run_parallel(jobs)


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_broken_rules_fail_the_unit_tests(
    mutation: str, mutation_results: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = mutation_results[mutation]
    assert result.returncode != 0, f"the tests still pass with: {mutation}"
    assert "FAILED" in result.stdout + result.stderr
