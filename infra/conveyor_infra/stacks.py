"""The repository's stacks, one `Pulumi.<stack>.yaml` each, found by name (a fork's new stack
needs no list edit), and the task modules they deploy, for the parts that read them without
running the program (the schema gate, the SLO rules of the deployed types)."""

from __future__ import annotations

from pathlib import Path

import yaml

from conveyor_infra.config import PROJECT_NAMESPACE, stack_key
from conveyor_infra.paths import REPO_ROOT


def stack_files(repo: Path = REPO_ROOT) -> dict[str, Path]:
    """Each stack's file, by stack name."""
    return {path.name.split(".")[1]: path for path in sorted(repo.glob("Pulumi.*.yaml"))}


def task_modules(repo: Path = REPO_ROOT) -> tuple[str, ...]:
    """Every module some stack names in its task modules key, each once."""
    key = f"{PROJECT_NAMESPACE}:{stack_key('task_modules')}"
    modules: list[str] = []
    for path in stack_files(repo).values():
        config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
        modules += config.get(key) or []
    return tuple(dict.fromkeys(modules))
