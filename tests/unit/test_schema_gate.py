"""The schema-evolution gate (conveyor_dev.schema_gate): every declared payload model still
reads what its committed snapshot accepted, and the compatibility rule itself."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path
from typing import Any, Literal

import pytest
from conveyor.tasks import registry
from conveyor_dev import schema_gate
from pydantic import BaseModel, Field


def test_every_declared_payload_model_matches_its_snapshot():
    types = registry.load(schema_gate.declared_modules())
    assert {"demo.sleep", "oracle.work"} <= set(types)
    problems = [finding.message() for finding in schema_gate.findings(types)]
    assert not problems, "\n".join(problems)


# ---- the rule ----


class Line(BaseModel):
    sku: str
    quantity: int = Field(ge=1)


class Base(BaseModel):
    customer_id: str
    amount: int
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    kind: Literal["a", "b"] = "a"
    note: str | None = None
    lines: list[Line] = []


class LineWithoutQuantity(BaseModel):
    sku: str


class LineStricter(BaseModel):
    sku: str
    quantity: int = Field(ge=2)


def _changed(**fields: Any) -> type[BaseModel]:
    """Base with `fields` replaced (a (type, default) tuple) or removed (None)."""
    from pydantic import create_model

    kept = {
        name: (info.annotation, info)
        for name, info in Base.model_fields.items()
        if name not in fields or fields[name] is not None
    }
    kept.update({name: spec for name, spec in fields.items() if spec is not None})
    return create_model("Base", **kept)  # type: ignore[call-overload,no-any-return]


def _problems(new: type[BaseModel]) -> list[str]:
    return schema_gate.breaking_changes(Base.model_json_schema(), new.model_json_schema())


@pytest.mark.parametrize(
    ("new", "problem"),
    [
        (_changed(amount=None), "payload.amount: removed"),
        (_changed(region=(str, ...)), "payload.region: newly required"),
        (_changed(note=(str, ...)), "payload.note: newly required"),
        (_changed(amount=(str, ...)), "payload.amount: type integer narrowed to string"),
        (_changed(note=(str, "")), "payload.note: type null narrowed to string"),
        (_changed(kind=(Literal["a"], "a")), "payload.kind: no longer accepts ['b']"),
        (_changed(customer_id=(str, Field(max_length=8))), "maxLength tightened from none to 8"),
        (_changed(currency=(str, Field(pattern="^[A-Z]{2}$"))), "payload.currency: pattern"),
        (_changed(lines=(list[LineWithoutQuantity], [])), "payload.lines[].quantity: removed"),
        (
            _changed(lines=(list[LineStricter], [])),
            "payload.lines[].quantity: minimum tightened from 1 to 2",
        ),
    ],
)
def test_a_breaking_change_is_named_by_its_field(new: type[BaseModel], problem: str):
    problems = _problems(new)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize(
    "new",
    [
        _changed(region=(str, "eu")),  # a new optional field
        _changed(amount=(float, ...)),  # integer widened to number
        _changed(amount=(int | None, None)),  # required to optional, null allowed
        _changed(kind=(Literal["a", "b", "c"], "a")),  # a longer enum
        _changed(customer_id=(str, Field(description="the CRM id"))),  # annotations only
    ],
)
def test_a_compatible_change_passes(new: type[BaseModel]):
    assert _problems(new) == []


# ---- the workflow, on a fork's package of its own ----

BEFORE = """
from conveyor.tasks.registry import task
from pydantic import BaseModel

class Render(BaseModel):
    customer_id: str
    currency: str

@task("invoice.render", payload=Render{version})
def render(ctx, payload: Render) -> None:
    return None
"""


@pytest.fixture
def fork(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A package `gatefork` on sys.path; `write(source)` (re)declares its task module."""
    package = tmp_path / "gatefork"
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_DECLARED", {})
    monkeypatch.setattr(sys, "dont_write_bytecode", True)

    def write(source: str) -> registry.Registry:
        (package / "tasks.py").write_text(textwrap.dedent(source))
        sys.modules.pop("gatefork.tasks", None)
        registry._DECLARED.clear()
        importlib.invalidate_caches()
        return registry.load(["gatefork.tasks"])

    yield package, write
    sys.modules.pop("gatefork.tasks", None)
    sys.modules.pop("gatefork", None)


def test_refresh_then_a_breaking_change_fails_until_the_version_is_bumped(fork):
    package, write = fork
    types = write(BEFORE.format(version=""))
    assert [f.kind for f in schema_gate.findings(types)] == ["missing"]
    assert schema_gate.refresh(types) == []
    snapshot = package / "schemas" / "invoice.render.json"
    assert json.loads(snapshot.read_text())["task_type"] == "invoice.render"
    assert schema_gate.findings(types) == []

    broken = write(BEFORE.replace("    currency: str\n", "").format(version=""))
    (finding,) = schema_gate.findings(broken)
    assert (finding.kind, finding.problems) == ("breaking", ("payload.currency: removed",))
    assert "Declare a new version (version=2: wire name invoice.render.v2)" in finding.message()
    assert schema_gate.refresh(broken) == [finding]  # refresh does not paper over it
    assert json.loads(snapshot.read_text())["schema"]["properties"].keys() == {
        "customer_id",
        "currency",
    }

    bumped = write(BEFORE.replace("    currency: str\n", "").format(version=", version=2"))
    kinds = {f.type_name: f.kind for f in schema_gate.findings(bumped)}
    assert kinds == {"invoice.render.v2": "missing", "invoice.render": "orphan"}
    schema_gate.refresh(bumped)
    snapshot.unlink()  # the old version drained: its declaration and snapshot go
    assert schema_gate.findings(bumped) == []


def test_an_unreleased_type_may_accept_its_breaking_change(fork):
    _, write = fork
    schema_gate.refresh(write(BEFORE.format(version="")))
    broken = write(BEFORE.replace("    currency: str\n", "").format(version=""))
    assert schema_gate.refresh(broken, accept_breaking=["invoice.render"]) == []
    assert schema_gate.findings(broken) == []


def test_the_command_exits_1_naming_the_field(fork, capsys):
    _, write = fork
    schema_gate.refresh(write(BEFORE.format(version="")))
    write(BEFORE.replace("currency: str", "currency: int").format(version=""))
    assert schema_gate.main(["--modules", "gatefork.tasks"]) == 1
    err = capsys.readouterr().err
    assert "invoice.render: breaking change to its payload model" in err
    assert "payload.currency: type string narrowed to integer" in err
