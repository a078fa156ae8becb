"""Helpers for reading what the stacks declare (imported by the infra tests; fixtures live in
conftest.py)."""

from __future__ import annotations

import json
from typing import Any

from conveyor_dev.emulators.declared import Declaration

STACKS = ("dev", "staging", "prod", "localstack")
COMPUTE_STACKS = ("dev", "staging", "prod")
SERVICES = ("api", "relay", "worker")


def container_definitions(declaration: Declaration, service: str) -> list[dict[str, Any]]:
    task_definition = declaration.named(f"ecs-{service}-task")
    definitions: list[dict[str, Any]] = json.loads(task_definition.inputs["containerDefinitions"])
    return definitions


def container(declaration: Declaration, service: str, name: str) -> dict[str, Any]:
    return next(c for c in container_definitions(declaration, service) if c["name"] == name)


def pairs(items: list[dict[str, str]], value_key: str = "value") -> dict[str, str]:
    return {item["name"]: item[value_key] for item in items}
