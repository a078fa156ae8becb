"""Failpoints (conveyor.failpoints): parsing, the unset no-op, a real SIGKILL when armed, and
the table in its docstring matching the failpoints the code really hits.

The armed set is read once at import, so the armed behaviour runs in a child interpreter.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conveyor import failpoints

SOURCES = Path(failpoints.__file__).parent

CHILD = """
from conveyor import failpoints
failpoints.hit("worker.after_claim")
print("alive", flush=True)
failpoints.hit("api.after_commit")
print("survived", flush=True)
"""


def _child(spec: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONVEYOR_FAILPOINTS": spec}
    return subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60
    )


def test_parse_accepts_a_list_with_spaces_and_empty_parts():
    assert failpoints._parse("") == {}
    assert failpoints._parse(" , ") == {}
    assert failpoints._parse("api.after_send=kill, relay.after_send=kill,") == {
        "api.after_send": "kill",
        "relay.after_send": "kill",
    }


@pytest.mark.parametrize(
    "spec",
    ["api.after_send=explode", "api.after_send", "api.after_send=", "api.after_send=KILL"],
)
def test_parse_rejects_unknown_actions_naming_the_point(spec: str):
    with pytest.raises(ValueError, match=r"failpoint 'api.after_send': unknown action"):
        failpoints._parse(spec)


@pytest.mark.parametrize("spec", ["api.after_comit=kill", "relay.before_send=kill", "=kill"])
def test_parse_rejects_unknown_failpoints(spec: str):
    with pytest.raises(ValueError, match=r"failpoint '.*': unknown \(known: api.after_commit"):
        failpoints._parse(f"api.after_commit=kill,{spec}")


def test_unset_failpoints_are_a_no_op():
    assert "CONVEYOR_FAILPOINTS" not in os.environ, "tests must not run with failpoints armed"
    assert failpoints._ARMED == {}
    failpoints.hit("api.after_commit")  # still here


def test_an_armed_kill_point_kills_the_process_there_and_only_there():
    result = _child("api.after_commit=kill")
    assert result.returncode == -signal.SIGKILL
    assert result.stdout == "alive\n"


def test_an_armed_point_that_is_never_hit_does_nothing():
    result = _child("relay.after_send=kill")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "alive\nsurvived\n"


@pytest.mark.parametrize("spec", ["api.after_commit=explode", "api.after_comit=kill"])
def test_a_bad_spec_fails_at_start_not_silently(spec: str):
    result = _child(spec)
    assert result.returncode == 1
    assert "unknown" in result.stderr
    assert "alive" not in result.stdout


def _hits_in_code() -> Counter[str]:
    hits: Counter[str] = Counter()
    for path in SOURCES.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "hit"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "failpoints"
            ):
                (arg,) = node.args
                assert isinstance(arg, ast.Constant), f"{path}: failpoint names are literals"
                hits[arg.value] += 1
    return hits


def test_every_failpoint_is_hit_exactly_once_and_every_hit_is_known():
    assert _hits_in_code() == Counter(dict.fromkeys(failpoints.POINTS, 1))


def test_the_documented_table_lists_exactly_the_failpoints():
    documented = set(re.findall(r"^\| (\w+\.\w+) +\|", failpoints.__doc__ or "", re.M))
    assert documented == failpoints.POINTS
