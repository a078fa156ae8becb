"""The CONVEYOR_AWS_FAULTS syntax (conveyor_dev.inject.faults.parse) and rule windows; the faults
themselves run against the emulator in tests/store/test_fault_injection.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conveyor_dev.inject import faults


def test_unset_arms_nothing():
    assert faults.ENV_VAR not in os.environ, "tests must not run with AWS faults armed"
    assert faults._PLAN.rules == []
    assert faults.parse("") == [] and faults.parse(" ; ") == []


def test_a_rule_with_every_option():
    (rule,) = faults.parse("dynamodb.Put*=hang after=1.5 for=25 count=3 p=0.5 seconds=2 while=/x")
    assert (rule.service, rule.operation, rule.kind) == ("dynamodb", "Put*", "hang")
    assert (rule.after, rule.duration, rule.count, rule.p, rule.seconds, rule.while_path) == (
        1.5,
        25.0,
        3,
        0.5,
        2.0,
        "/x",
    )


def test_several_rules_in_order():
    rules = faults.parse("sqs.*=down; dynamodb.*=error p=0.1")
    assert [(r.service, r.kind) for r in rules] == [("sqs", "down"), ("dynamodb", "error")]


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("dynamodb=throttle", "expected '<service>.<Operation>=<kind>"),
        ("dynamodb.PutItem", "expected '<service>.<Operation>=<kind>"),
        ("dynamodb.PutItem=", "expected '<service>.<Operation>=<kind>"),
        ("dynamodb.PutItem=explode", "unknown kind 'explode'"),
        ("dynamodb.PutItem=throttle often=1", "bad option 'often=1'"),
        ("dynamodb.PutItem=throttle count", "bad option 'count'"),
        ("dynamodb.PutItem=throttle for=soon", "for='soon' is not a number"),
        ("dynamodb.PutItem=throttle p=2", "p='2' is out of range"),
        ("dynamodb.PutItem=throttle count=-1", "count='-1' is out of range"),
        ("dynamodb.PutItem=throttle seconds=1", "'seconds' applies to hang only"),
    ],
)
def test_bad_specs_name_the_rule_and_the_mistake(spec: str, why: str):
    with pytest.raises(ValueError, match="AWS fault") as err:
        faults.parse(f"sqs.*=down; {spec}")
    assert why in str(err.value)
    assert spec.split()[0] in str(err.value)


def test_a_bad_spec_fails_at_start():
    env = {**os.environ, faults.ENV_VAR: "dynamodb.*=explode"}
    result = subprocess.run(
        [sys.executable, "-c", "import conveyor_dev.inject.faults"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "unknown kind 'explode'" in result.stderr


def test_windows_count_from_arming(tmp_path):
    (rule,) = faults.parse("dynamodb.*=throttle after=1 for=2")
    assert [rule.window_open(t) for t in (0, 0.99, 1, 2.99, 3)] == [
        False,
        False,
        True,
        True,
        False,
    ]
    flag = tmp_path / "outage"
    (live,) = faults.parse(f"sqs.*=down while={flag}")
    assert not live.window_open(0)
    flag.touch()
    assert live.window_open(0)


def test_skip_lets_the_first_calls_through():
    plan = faults.Plan(faults.parse("dynamodb.TransactWriteItems=lost skip=1 count=1"))
    picked = [plan.pick("dynamodb", "TransactWriteItems") for _ in range(3)]
    assert [r is not None for r in picked] == [False, True, False]


def test_count_and_probability_limit_the_hits():
    plan = faults.Plan(faults.parse("dynamodb.GetItem=error count=2; dynamodb.*=throttle p=0"))
    picked = [plan.pick("dynamodb", "GetItem") for _ in range(4)]
    assert [r.kind if r else None for r in picked] == ["error", "error", None, None]
    assert plan.pick("sqs", "GetItem") is None
