"""Task types declared once with `@task` (conveyor.tasks.registry): what a declaration holds,
which types a deployment's module list selects, and the mistakes a declaration refuses."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conveyor.tasks.registry import (
    Backoff,
    Registry,
    UnknownModel,
    declare,
    load,
    seconds,
    task,
    type_for,
)
from pydantic import BaseModel, ValidationError
from typed_fixture.invoicing import InvoiceRender, RenderResult, render

DEMO = "conveyor_dev.local.demo_handlers"
FORK = "typed_fixture.invoicing"


class Empty(BaseModel):
    pass


def _noop(ctx: object, payload: Empty) -> None:
    return None


def test_a_declaration_holds_its_payload_result_and_policy():
    declared = load([FORK])["invoice.render"]
    assert declared.payload is InvoiceRender
    assert declared.result is RenderResult  # from the handler's return annotation
    assert declared.handler is render  # the decorator returns the function unchanged
    assert (declared.max_attempts, declared.timeout, declared.concurrency) == (8, 30.0, 2)
    assert declared.backoff == Backoff(base=1.0, cap=300.0)
    assert declared.permanent == (ValidationError,)


def test_a_deployment_gets_the_types_of_the_modules_it_names_and_no_others():
    assert list(load([FORK])) == ["invoice.render"]
    assert "invoice.render" not in load([DEMO])
    combined = load([DEMO, FORK])  # the demo's and a fork's, without a merged mapping
    assert {"demo.sleep", "invoice.render"} <= set(combined)
    assert load(["typed_fixture"]).keys() == {"invoice.render"}  # a package: its submodules


def test_loading_no_module_or_a_module_without_declarations_is_refused():
    with pytest.raises(ValueError, match="no task modules named"):
        load([])
    with pytest.raises(ValueError, match="json declares no task type"):
        load(["json"])
    with pytest.raises(ImportError):
        load(["no_such_module_here"])


def test_a_client_finds_a_type_by_its_payload_model():
    load([FORK, DEMO])
    assert type_for(InvoiceRender).type_name == "invoice.render"
    assert type_for(InvoiceRender(customer_id="c", amount_cents=1, currency="EUR")).name == (
        "invoice.render"
    )
    with pytest.raises(UnknownModel, match="Empty is the payload of no declared task type"):
        type_for(Empty)
    shared = Registry(declare(name, _noop, payload=Empty) for name in ("a.one", "a.two"))
    with pytest.raises(UnknownModel, match=r"a\.one, a\.two: name the task type"):
        shared.for_model(Empty)


def test_a_new_version_is_a_type_of_its_own_on_the_wire():
    assert declare("invoice.render", _noop, payload=Empty).type_name == "invoice.render"
    assert declare("invoice.render", _noop, payload=Empty, version=2).type_name == (
        "invoice.render.v2"
    )


def test_a_type_declared_twice_by_different_handlers_is_refused():
    def other(ctx: object, payload: Empty) -> None:
        return None

    with pytest.raises(ValueError, match=r"'invoice\.render' is declared twice"):
        task("invoice.render", payload=Empty)(other)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": "Invoice"}, "must match"),
        ({"name": "a" * 62, "version": 2}, "must match"),  # a.v2 past 64 characters
        ({"max_attempts": 21}, "max_attempts must be 1..20"),
        ({"max_attempts": 0}, "max_attempts must be 1..20"),
        ({"concurrency": 0}, "concurrency must be at least 1"),
        ({"timeout": "soon"}, "use seconds or a string like 30s"),
        ({"timeout": 0}, "must be positive"),
        ({"version": 0}, "version must be at least 1"),
        ({"payload": dict}, "payload must be a pydantic model class"),
        ({"permanent": ("ValueError",)}, "permanent must be a tuple of exception classes"),
    ],
)
def test_a_bad_declaration_is_refused_with_what_is_wrong(kwargs, error):
    fields = {"name": "x.y", "payload": Empty, **kwargs}
    with pytest.raises((ValueError, TypeError), match=error):
        declare(fields.pop("name"), _noop, **fields)


def test_durations_and_backoff():
    assert [seconds(v) for v in ("500ms", "30s", "5m", "1h", 2, 1.5)] == [
        0.5,
        30.0,
        300.0,
        3600.0,
        2.0,
        1.5,
    ]
    with pytest.raises(ValueError, match="exceeds its cap"):
        Backoff(base="2m", cap="1m")
    with pytest.raises(ValueError, match="exceeds SQS's 43200 s"):
        Backoff(cap="13h")


def test_importing_the_demo_task_module_starts_nothing():
    # The API imports a deployment's task modules for their declarations: no threads, no
    # connections, nothing but definitions.
    probe = (
        "import threading, socket\n"
        "opened = []\n"
        "socket.socket.connect = lambda self, *a: opened.append(a)\n"
        f"import {DEMO}\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "assert not opened, opened\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)
