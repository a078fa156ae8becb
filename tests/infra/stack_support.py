"""Helpers for reading what the stacks declare (imported by the infra tests; fixtures live in
conftest.py)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import yaml
from conveyor_dev.emulators.declared import Declaration
from conveyor_infra import stacks
from conveyor_infra.config import PROJECT_NAMESPACE, StackConfig
from conveyor_infra.paths import REPO_ROOT


def stack_file(stack: str) -> dict[str, Any]:
    """The `config:` block of Pulumi.<stack>.yaml, as written."""
    config: dict[str, Any] = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())[
        "config"
    ]
    return config


@cache
def stack_config(stack: str) -> StackConfig:
    """What the program reads from a stack file (defaults filled in), to derive expectations."""
    prefix = f"{PROJECT_NAMESPACE}:"
    values = {
        k.removeprefix(prefix): v for k, v in stack_file(stack).items() if k.startswith(prefix)
    }
    return StackConfig.model_validate({"region": stack_file(stack)["aws:region"], **values})


# Every stack the repository has: a new Pulumi.<stack>.yaml is tested without a test edit.
STACKS = tuple(stacks.stack_files())
COMPUTE_STACKS = tuple(s for s in STACKS if stack_config(s).deploy_compute)
SERVICES = ("api", "relay", "worker")


def container_definitions(declaration: Declaration, service: str) -> list[dict[str, Any]]:
    task_definition = declaration.named(f"ecs-{service}-task")
    definitions: list[dict[str, Any]] = json.loads(task_definition.inputs["containerDefinitions"])
    return definitions


def container(declaration: Declaration, service: str, name: str) -> dict[str, Any]:
    return next(c for c in container_definitions(declaration, service) if c["name"] == name)


def pairs(items: list[dict[str, str]], value_key: str = "value") -> dict[str, str]:
    return {item["name"]: item[value_key] for item in items}
