"""Per-type task SLOs: a type declared with `slo=TaskSlo(...)` gets an SLO of its own per
objective, with its rules and generated promtool tests, and the global SLO of its kind stops
counting that type, so an outage of it pages once (proved by promtool evaluating the generated
rules)."""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from conveyor.tasks.registry import TaskSlo, declare
from conveyor_observability import promtool as pt
from conveyor_observability.artefacts import generated_files
from conveyor_observability.paths import REPO_ROOT, SPEC_PATH
from conveyor_observability.spec import (
    TASK_TYPES_PLACEHOLDER,
    Spec,
    SpecError,
    deployed_task_types,
    load_spec,
    parse_spec,
)
from pydantic import BaseModel

TYPE = "invoice.render"


class _Invoice(BaseModel):
    customer_id: str


def _spec(slo: TaskSlo | None, raw: dict[str, Any] | None = None) -> Spec:
    declared = declare(TYPE, lambda ctx, invoice: None, payload=_Invoice, slo=slo)
    return parse_spec(raw or yaml.safe_load(SPEC_PATH.read_text()), [declared])


@pytest.fixture(scope="module")
def typed_spec() -> Spec:
    return _spec(TaskSlo(success=99.9, freshness=95))


def test_each_objective_is_an_slo_of_its_own_and_the_global_one_excludes_its_type(
    typed_spec: Spec,
) -> None:
    success = typed_spec.slo("task-success-invoice-render")
    assert (success.task_type, success.objective) == (TYPE, Decimal("99.9"))
    assert typed_spec.slo("task-freshness-invoice-render").objective == Decimal("95")
    assert 'task_type="invoice.render"' in success.sli.errors
    assert all("invoice.render" in s for s in success.test_series.good + success.test_series.bad)
    for name in ("task-success", "task-freshness"):
        glob = typed_spec.slo(name)
        for query in (glob.sli.errors, glob.sli.total):
            assert 'task_type!~"invoice\\\\.render"' in query
            assert TASK_TYPES_PLACEHOLDER not in query


def test_without_a_typed_slo_the_global_slos_count_every_type() -> None:
    for spec in (_spec(None), _spec(TaskSlo())):
        for slo in spec.slos:
            assert "!~" not in slo.sli.errors.replace('outcome!~"cancelled|expired"', "")


def test_only_the_named_objective_makes_an_slo_and_excludes_the_type() -> None:
    spec = _spec(TaskSlo(freshness=95))
    assert [s.name for s in spec.slos if s.task_type] == ["task-freshness-invoice-render"]
    assert 'task_type=~".*"' in spec.slo("task-success").sli.errors


@pytest.mark.parametrize("objective", [0, 100, 120])
def test_an_objective_outside_0_to_100_is_refused_at_declaration(objective: float) -> None:
    with pytest.raises(ValueError, match="percent"):
        TaskSlo(success=objective)


def test_an_slo_the_spec_does_not_measure_per_type_is_refused() -> None:
    raw = yaml.safe_load(SPEC_PATH.read_text())
    freshness = next(s for s in raw["slos"] if s["name"] == "task-freshness")
    for part in ("errors", "total"):
        freshness["sli"][part] = freshness["sli"][part].replace(TASK_TYPES_PLACEHOLDER, "")
    with pytest.raises(SpecError, match="slo freshness needs an SLO 'task-freshness'"):
        _spec(TaskSlo(freshness=95), raw)


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
    _assert_outage_burns_only_its_own_slo(typed_spec, TYPE, tmp_path)


# The deployed types with a task-success SLO of their own (none in Conveyor; a fork's, e.g. the
# README tutorial's, which runs this test on its generated rules).
DEPLOYED_TYPED = [t.type_name for t in deployed_task_types() if t.slo and t.slo.success]


@pytest.mark.parametrize("task_type", DEPLOYED_TYPED)
def test_an_outage_of_a_deployed_typed_type_burns_only_its_own_slo(
    promtool: str, task_type: str, tmp_path: Path
) -> None:
    _assert_outage_burns_only_its_own_slo(load_spec(), task_type, tmp_path)


def _assert_outage_burns_only_its_own_slo(spec: Spec, task_type: str, tmp_path: Path) -> None:
    """All of `task_type`'s tasks dead, another type's fine: the type's own task-success SLO
    sees an error ratio of 1, the global one 0."""
    written = _write(spec, tmp_path)
    own = next(s.name for s in spec.slos if s.task_type == task_type and "success" in s.name)
    ratio = 'slo:sli_error:ratio_rate5m{{sloth_slo="{}"}}'
    test = {
        "rule_files": [
            str(written["conveyor-task-success.slo.rules.yaml"]),
            str(written[f"conveyor-{own}.slo.rules.yaml"]),
        ],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'conveyor_tasks_completed_total{{task_type="{task_type}",'
                        'outcome="dead"}',
                        "values": "0+10x30",
                    },
                    {
                        "series": 'conveyor_tasks_completed_total{task_type="email.send",'
                        'outcome="succeeded"}',
                        "values": "0+10x30",
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": ratio.format(own),
                        "eval_time": "20m",
                        "exp_samples": [_sample(own, 1)],
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
