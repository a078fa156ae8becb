"""Failpoints (conveyor.failpoints): parsing, the unset no-op, and a real SIGKILL when armed.

The armed set is read once at import, so the armed behaviour runs in a child interpreter.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from conveyor import failpoints

CHILD = """
from conveyor import failpoints
failpoints.hit("other.point")
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
    assert failpoints._parse("a.b=kill, c=kill,") == {"a.b": "kill", "c": "kill"}


@pytest.mark.parametrize("spec", ["a=explode", "a", "a=", "a=KILL", "ok=kill,b=panic"])
def test_parse_rejects_unknown_actions_naming_the_point(spec: str):
    with pytest.raises(ValueError, match=r"failpoint '(a|b)': unknown action"):
        failpoints._parse(spec)


def test_unset_failpoints_are_a_no_op():
    assert "CONVEYOR_FAILPOINTS" not in os.environ, "tests must not run with failpoints armed"
    assert failpoints._ARMED == {}
    failpoints.hit("api.after_commit")  # still here
    failpoints.hit("no.such.point")


def test_an_armed_kill_point_kills_the_process_there_and_only_there():
    result = _child("api.after_commit=kill")
    assert result.returncode == -signal.SIGKILL
    assert result.stdout == "alive\n"


def test_an_armed_point_that_is_never_hit_does_nothing():
    result = _child("relay.before_send=kill")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "alive\nsurvived\n"


def test_a_bad_spec_fails_at_start_not_silently():
    result = _child("api.after_commit=explode")
    assert result.returncode == 1
    assert "unknown action 'explode'" in result.stderr
    assert "alive" not in result.stdout
