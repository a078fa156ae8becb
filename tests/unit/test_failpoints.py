"""Failpoints: the product's seam (conveyor.failpoints) and the harness's actions
(conveyor_dev.inject.failpoint_actions): parsing, the unset no-op, a real SIGKILL when armed through
the launcher the local system starts services with, and the table in the seam's docstring
matching the failpoints the code really hits.
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
from conveyor_dev.inject import failpoint_actions as actions

SOURCES = Path(failpoints.__file__).parent

CHILD = """
from conveyor import failpoints
failpoints.hit("worker.after_claim")
print("alive", flush=True)
failpoints.hit("api.after_commit")
print("survived", flush=True)
"""


@pytest.fixture
def child_module(tmp_path: Path) -> Path:
    (tmp_path / "failpoint_child.py").write_text(CHILD)
    return tmp_path


def _launch(directory: Path, spec: str) -> subprocess.CompletedProcess[str]:
    """The child module run as the local system runs a service: through the launcher."""
    path = os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "CONVEYOR_FAILPOINTS": spec, "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, "-m", "conveyor_dev.inject.launch", "failpoint_child"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_parse_accepts_a_list_with_spaces_and_empty_parts():
    assert actions.parse("") == {}
    assert actions.parse(" , ") == {}
    assert actions.parse("api.after_send=kill, enqueue.after_send=kill,") == {
        "api.after_send": "kill",
        "enqueue.after_send": "kill",
    }


@pytest.mark.parametrize(
    "spec",
    ["api.after_send=explode", "api.after_send", "api.after_send=", "api.after_send=KILL"],
)
def test_parse_rejects_unknown_actions_naming_the_point(spec: str):
    with pytest.raises(ValueError, match=r"failpoint 'api.after_send': unknown action"):
        actions.parse(spec)


@pytest.mark.parametrize("spec", ["api.after_comit=kill", "relay.before_send=kill", "=kill"])
def test_parse_rejects_unknown_failpoints(spec: str):
    with pytest.raises(ValueError, match=r"failpoint '.*': unknown \(known: api.after_commit"):
        actions.parse(f"api.after_commit=kill,{spec}")


def test_unset_failpoints_are_a_no_op():
    assert "CONVEYOR_FAILPOINTS" not in os.environ, "tests must not run with failpoints armed"
    assert failpoints._actions == {}
    failpoints.hit("api.after_commit")  # still here


def test_the_seam_refuses_an_action_for_an_unknown_failpoint():
    with pytest.raises(ValueError, match="unknown failpoints"):
        failpoints.install({"api.after_comit": lambda: None})


def test_without_the_launcher_an_armed_spec_does_nothing(child_module: Path):
    """The product reads no CONVEYOR_FAILPOINTS: only the harness arms failpoints."""
    path = os.pathsep.join(filter(None, [str(child_module), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "CONVEYOR_FAILPOINTS": "api.after_commit=kill", "PYTHONPATH": path}
    result = subprocess.run(
        [sys.executable, "-m", "failpoint_child"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "alive\nsurvived\n"


def test_an_armed_kill_point_kills_the_process_there_and_only_there(child_module: Path):
    result = _launch(child_module, "api.after_commit=kill")
    assert result.returncode == -signal.SIGKILL
    assert result.stdout == "alive\n"


def test_an_armed_point_that_is_never_hit_does_nothing(child_module: Path):
    result = _launch(child_module, "enqueue.after_send=kill")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "alive\nsurvived\n"


@pytest.mark.parametrize("spec", ["api.after_commit=explode", "api.after_comit=kill"])
def test_a_bad_spec_fails_at_start_not_silently(child_module: Path, spec: str):
    result = _launch(child_module, spec)
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
