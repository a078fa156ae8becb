"""Per-type task SLOs: a `task_type_slos` entry makes an SLO for one type, with its rules and
generated promtool tests, and the global SLO of its kind stops counting that type, so an outage
of it pages once (proved by promtool evaluating the generated rules)."""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from conveyor_observability import promtool as pt
from conveyor_observability.artefacts import generated_files
from conveyor_observability.paths import REPO_ROOT, SPEC_PATH
from conveyor_observability.spec import TASK_TYPES_PLACEHOLDER, Spec, SpecError, parse_spec

TYPE = "invoice.render"


def _spec(*entries: dict[str, Any]) -> Spec:
    raw = yaml.safe_load(SPEC_PATH.read_text())
    raw["task_type_slos"] = list(entries)
    return parse_spec(raw)


@pytest.fixture(scope="module")
def typed_spec() -> Spec:
    return _spec(
        {"task_type": TYPE, "slo": "task-success", "objective": 99.9},
        {"task_type": TYPE, "slo": "task-freshness", "objective": 95},
    )


def test_each_entry_is_an_slo_of_its_own_and_the_global_one_excludes_its_type(
    typed_spec: Spec,
) -> None:
    success = typed_spec.slo("task-success-invoice-render")
    assert (success.task_type, success.objective) == (TYPE, Decimal("99.9"))
    assert 'task_type="invoice.render"' in success.sli.errors
    assert all("invoice.render" in s for s in success.test_series.good + success.test_series.bad)
    for name in ("task-success", "task-freshness"):
        glob = typed_spec.slo(name)
        for query in (glob.sli.errors, glob.sli.total):
            assert 'task_type!~"invoice\\\\.render"' in query
            assert TASK_TYPES_PLACEHOLDER not in query


def test_without_entries_the_global_slos_count_every_type() -> None:
    for slo in _spec().slos:
        assert "!~" not in slo.sli.errors.replace('outcome!~"cancelled|expired"', "")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"task_type": TYPE, "slo": "api-latency", "objective": 99}, "is not one of"),
        ({"task_type": "Bad Type", "slo": "task-success", "objective": 99}, "not a task type"),
        ({"task_type": TYPE, "slo": "task-success"}, "objective"),
    ],
)
def test_a_bad_entry_is_refused(entry: dict[str, Any], problem: str) -> None:
    with pytest.raises(SpecError, match=problem):
        _spec(entry)


def _write(spec: Spec, root: Path) -> dict[str, Path]:
    written = {}
    for path, content in generated_files(spec).items():
        target = root / path.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        written[path.name] = target
    return written


def test_the_generated_promtool_tests_of_a_typed_slo_pass(
    promtool: str, typed_spec: Spec, tmp_path: Path
) -> None:
    written = _write(typed_spec, tmp_path)
    names = ["slo-task-success-invoice-render.test.yaml", "slo-task-success.test.yaml"]
    results = pt.run_parallel({n: lambda n=n: pt.run_rule_tests(written[n]) for n in names})
    for result in results.values():
        assert result.returncode == 0, result.stdout + result.stderr


def test_an_outage_of_a_typed_type_burns_only_its_own_slo(
    promtool: str, typed_spec: Spec, tmp_path: Path
) -> None:
    written = _write(typed_spec, tmp_path)
    ratio = 'slo:sli_error:ratio_rate5m{{sloth_slo="{}"}}'
    test = {
        "rule_files": [
            str(written["conveyor-task-success.slo.rules.yaml"]),
            str(written["conveyor-task-success-invoice-render.slo.rules.yaml"]),
        ],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'conveyor_tasks_completed_total{{task_type="{TYPE}",'
                        'outcome="dead"}',
                        "values": "0+10x30",
                    },
                    {
                        "series": 'conveyor_tasks_completed_total{task_type="email.send",'
                        'outcome="succeeded"}',
                        "values": "0+10x30",
                    },
                ],
                "promql_exp_test": [],
                "promql_expr_test": [
                    {
                        "expr": ratio.format("task-success-invoice-render"),
                        "eval_time": "20m",
                        "exp_samples": [_sample("task-success-invoice-render", 1)],
                    },
                    {
                        "expr": ratio.format("task-success"),
                        "eval_time": "20m",
                        "exp_samples": [_sample("task-success", 0)],
                    },
                ],
            }
        ],
    }
    del test["tests"][0]["promql_exp_test"]
    path = tmp_path / "outage.test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result: subprocess.CompletedProcess[str] = pt.run_rule_tests(path)
    assert result.returncode == 0, result.stdout + result.stderr


def _sample(slo: str, value: float) -> dict[str, Any]:
    labels = (
        f'slo:sli_error:ratio_rate5m{{sloth_id="conveyor-{slo}",sloth_service="conveyor",'
        f'sloth_slo="{slo}",sloth_window="5m"}}'
    )
    return {"labels": labels, "value": value}


def test_the_slo_dashboard_gets_a_row_per_typed_slo(typed_spec: Spec) -> None:
    (dashboard,) = [
        content
        for path, content in generated_files(typed_spec).items()
        if "slos" in path.name and path.suffix == ".json"
    ]
    rows = [p["title"] for p in json.loads(dashboard)["panels"] if p["type"] == "row"]
    assert [r.split(":")[0] for r in rows if "invoice" in r] == [
        "task-success-invoice-render",
        "task-freshness-invoice-render",
    ]
