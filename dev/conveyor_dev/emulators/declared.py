"""What the Pulumi program declares for a stack, as plain data, without importing Pulumi.

`declare()` runs the program under Pulumi's mocks in a child process
(`conveyor_dev.emulators.simulation`) and returns every registered resource with the inputs the
program gave it. A child process keeps Pulumi's global runtime state out of the caller and
makes each run independent of the last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor_infra.paths import INFRA_DIR, REPO_ROOT


class DeclarationError(RuntimeError):
    """The program could not be run under mocks (bad stack config, program error)."""


@dataclass(frozen=True)
class DeclaredResource:
    """One resource as registered by the program.

    `inputs` are what the program passed (camelCase engine names, as the provider and the
    policy pack see them); `outputs` add what the mock cloud computed (ids, ARNs, URLs).
    """

    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]
    dependencies: tuple[str, ...] = ()
    property_dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Declaration:
    stack: str
    resources: tuple[DeclaredResource, ...]
    outputs: Mapping[str, Any]

    def of_type(self, resource_type: str) -> list[DeclaredResource]:
        return [r for r in self.resources if r.type == resource_type]

    def named(self, name: str) -> DeclaredResource:
        matches = [r for r in self.resources if r.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources named {name!r} in stack {self.stack}")
        return matches[0]

    def by_urn(self) -> dict[str, DeclaredResource]:
        return {r.urn: r for r in self.resources}

    def __iter__(self) -> Iterator[DeclaredResource]:
        return iter(self.resources)


def _from_json(stack: str, document: Mapping[str, Any]) -> Declaration:
    resources = tuple(
        DeclaredResource(
            type=r["type"],
            name=r["name"],
            urn=r["urn"],
            parent=r["parent"],
            custom=r["custom"],
            inputs=r["inputs"],
            outputs=r["outputs"],
            dependencies=tuple(r["dependencies"]),
            property_dependencies={k: tuple(v) for k, v in r["property_dependencies"].items()},
        )
        for r in document["resources"]
    )
    return Declaration(stack=stack, resources=resources, outputs=document["outputs"])


def declare(stack: str, overrides: Mapping[str, str] | None = None) -> Declaration:
    """Run the program for `stack` under mocks; `overrides` replace stack config keys."""
    command = [sys.executable, "-m", "conveyor_dev.emulators.simulation", stack]
    for key, value in (overrides or {}).items():
        command += ["--set", f"{key}={value}"]
    # The child finds this package even if the caller's environment was installed before it.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(INFRA_DIR), env.get("PYTHONPATH")]))
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO_ROOT, env=env, check=False
    )
    if done.returncode != 0:
        raise DeclarationError(
            f"running the Pulumi program for stack {stack!r} under mocks failed:\n"
            f"{done.stderr.strip()}"
        )
    return _from_json(stack, json.loads(done.stdout))
