"""The worker, relay, operator commands and API drive the task lifecycle (conveyor.tasks) and
never spell how a task is stored: no table attribute name as a string, no raw store write
(`transition`, whose `set_values`/`remove` take attribute names), no import of the layout."""

from __future__ import annotations

import ast
from pathlib import Path

import conveyor
import pytest
from conveyor import schema
from conveyor.tasks import codec

DRIVERS = ("worker/runner.py", "relay.py", "ops.py", "api/servicer.py")
ROOT = Path(conveyor.__file__).parent

ATTRIBUTES = {
    *(f.attr for f in codec.FIELDS),
    *schema.KEY_ATTRIBUTES,
    schema.TTL_ATTRIBUTE,
    schema.IDEM_TASK_ID,
    schema.IDEM_REQUEST_HASH,
    schema.EFFECT_TASK_ID,
    schema.EFFECT_OWNER,
    schema.EFFECT_AT,
}


def _log_field_names(tree: ast.AST) -> set[int]:
    """ids of the string keys of `extra={...}` arguments: log record fields, not attributes."""
    keys: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == "extra" and isinstance(kw.value, ast.Dict):
                    keys.update(id(k) for k in kw.value.keys if k is not None)
    return keys


def storage_spellings(source: str) -> list[str]:
    tree = ast.parse(source)
    log_fields = _log_field_names(tree)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and node.value in ATTRIBUTES
            and id(node) not in log_fields
        ):
            found.append(f"line {node.lineno}: attribute name {node.value!r}")
        if isinstance(node, ast.Attribute) and node.attr == "transition":
            found.append(f"line {node.lineno}: a raw store transition")
        if isinstance(node, ast.keyword) and node.arg in ("set_values", "remove"):
            found.append(f"line {node.value.lineno}: {node.arg}= (attribute names)")
        if isinstance(node, ast.ImportFrom) and node.module in (
            "conveyor.schema",
            "conveyor.tasks.codec",
        ):
            found.append(f"line {node.lineno}: imports {node.module}")
        if isinstance(node, ast.ImportFrom) and any(
            a.name in ("schema", "codec") for a in node.names
        ):
            found.append(f"line {node.lineno}: imports the layout")
    return found


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_driver_names_no_table_attribute(driver: str):
    assert storage_spellings((ROOT / driver).read_text()) == []


def test_the_check_finds_each_way_of_spelling_storage():
    source = """
from conveyor import schema
store.transition(task, S.QUEUED, set_values={"attempts": 0}, remove=("lease_owner",))
log.info("claimed", extra={"task_id": task.task_id})
"""
    assert sorted(storage_spellings(source)) == [
        "line 2: imports the layout",
        "line 3: a raw store transition",
        "line 3: attribute name 'attempts'",
        "line 3: attribute name 'lease_owner'",
        "line 3: remove= (attribute names)",
        "line 3: set_values= (attribute names)",
    ]
