"""The schema-evolution gate: a changed payload model must still read every payload an older
deployment could have queued.

Each declared task type has a committed JSON Schema snapshot of its payload model, beside the
package that declares it (`<package>/schemas/<wire name>.json`). `check` compares each
declared model with its snapshot and reports every breaking change by field path; `make test`
runs it (tests/unit/test_schema_gate.py). A breaking change is a new type version
(`@task(..., version=2)`, a type of its own on the wire) with a snapshot of its own; README
"Changing a payload model" says how to roll it out.

    python -m conveyor_dev.schema_gate               # check (exit 1 on a breaking change)
    python -m conveyor_dev.schema_gate --refresh     # write new and compatible snapshots
    python -m conveyor_dev.schema_gate --refresh --accept-breaking TYPE  # an unreleased type

The compatibility rule is small and conservative (`breaking_changes`): the new schema must
accept every value the old one accepted, and keep every field (a removed field would drop
what older clients still send). So a new optional field, a wider type (integer to number), a
longer enum, a looser bound are compatible; a removed field, a new required field, a narrower
type, a shorter enum, a tighter bound, a changed pattern or format are not. What it cannot
decide (a changed pattern) it calls breaking.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.settings import env_name
from conveyor.tasks.registry import Registry, TaskType, load, parse_modules
from conveyor_infra import stacks

from conveyor_dev.local import oracle
from conveyor_dev.local.system import LOCAL_TUNING

REPO_ROOT = Path(__file__).resolve().parents[2]
Schema = dict[str, Any]

# Keywords that only annotate: a change to them changes no accepted value.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "deprecated", "$defs"})
_HANDLED = frozenset(
    {
        "type", "enum", "const", "anyOf", "oneOf", "$ref", "properties", "required",
        "additionalProperties", "items", "minItems", "maxItems", "minLength", "maxLength",
        "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "multipleOf",
    }
)  # fmt: skip


def declared_modules(repo: Path = REPO_ROOT) -> tuple[str, ...]:
    """Every task module this repository deploys: the local system's and the oracle's (the
    demo), and each stack's `conveyor:taskModules`."""
    local = [*parse_modules(LOCAL_TUNING[env_name("task_modules")]), oracle.__name__]
    return tuple(dict.fromkeys([*local, *stacks.task_modules(repo)]))


def snapshot_path(declared: TaskType) -> Path:
    """`<the declaring package's directory>/schemas/<wire name>.json`."""
    module = importlib.import_module(declared.module)
    return Path(str(module.__file__)).parent / "schemas" / f"{declared.type_name}.json"


def snapshot_of(declared: TaskType) -> Schema:
    return {
        "task_type": declared.type_name,
        "payload_model": f"{declared.payload.__module__}.{declared.payload.__qualname__}",
        "schema": declared.payload.model_json_schema(mode="validation"),
    }


# ---- the compatibility rule ----


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    """Every way `new` fails to accept what `old` accepted, by field path (payload.x.y)."""
    return _compare(old, new, old, new, "payload")


def _resolve(schema: Schema, root: Schema) -> Schema:
    while "$ref" in schema:
        ref = str(schema["$ref"])
        if not ref.startswith("#/$defs/"):
            raise ValueError(f"unsupported $ref {ref}")
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**root["$defs"][ref.removeprefix("#/$defs/")], **siblings}
    return schema


def _branches(schema: Schema, root: Schema) -> list[Schema]:
    schema = _resolve(schema, root)
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if alternatives is None:
        return [schema]
    return [branch for alt in alternatives for branch in _branches(alt, root)]


def _compare(old: Schema, new: Schema, old_root: Schema, new_root: Schema, path: str) -> list[str]:
    problems: list[str] = []
    candidates = _branches(new, new_root)
    for branch in _branches(old, old_root):
        found: list[list[str]] = [
            _compare_one(branch, c, old_root, new_root, path) for c in candidates
        ]
        if all(found):
            # No new alternative takes this old one: report the closest (fewest problems).
            problems.extend(sorted(found, key=len)[0])
    return list(dict.fromkeys(problems))


def _types(schema: Schema) -> set[str] | None:
    """The JSON types a schema accepts; None: any."""
    if "type" in schema:
        value = schema["type"]
        return {value} if isinstance(value, str) else set(value)
    values = schema.get("enum", [schema["const"]] if "const" in schema else None)
    if values is None:
        return None
    return {_json_type(v) for v in values}


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _type_accepted(old_type: str, new_types: set[str] | None) -> bool:
    if new_types is None:
        return True
    return old_type in new_types or (old_type == "integer" and "number" in new_types)


def _compare_one(
    old: Schema, new: Schema, old_root: Schema, new_root: Schema, path: str
) -> list[str]:
    problems: list[str] = []
    old_types, new_types = _types(old), _types(new)
    if new_types is not None and (
        old_types is None or not all(_type_accepted(t, new_types) for t in old_types)
    ):
        before = "any" if old_types is None else "|".join(sorted(old_types))
        problems.append(f"{path}: type {before} narrowed to {'|'.join(sorted(new_types))}")
        return problems
    old_values = old.get("enum", [old["const"]] if "const" in old else None)
    new_values = new.get("enum", [new["const"]] if "const" in new else None)
    if new_values is not None:
        lost = None if old_values is None else [v for v in old_values if v not in new_values]
        if lost is None:
            problems.append(f"{path}: now limited to {new_values}")
        elif lost:
            problems.append(f"{path}: no longer accepts {lost}")
    problems += _bounds(old, new, path)
    for keyword in ("pattern", "format", "multipleOf"):
        if keyword in new and new[keyword] != old.get(keyword):
            problems.append(f"{path}: {keyword} changed to {new[keyword]!r}")
    for keyword in sorted(set(new) - _ANNOTATIONS - _HANDLED):
        if new[keyword] != old.get(keyword):
            problems.append(f"{path}: {keyword} changed to {new[keyword]!r}")
    if "properties" in old or "properties" in new:
        problems += _compare_object(old, new, old_root, new_root, path)
    if "items" in old and "items" in new:
        problems += _compare(old["items"], new["items"], old_root, new_root, f"{path}[]")
    return problems


# keyword -> True when a larger new value narrows (a lower bound), False when a smaller does.
_BOUNDS = {
    "minimum": True, "exclusiveMinimum": True, "minLength": True, "minItems": True,
    "maximum": False, "exclusiveMaximum": False, "maxLength": False, "maxItems": False,
}  # fmt: skip


def _bounds(old: Schema, new: Schema, path: str) -> list[str]:
    problems = []
    for keyword, lower in _BOUNDS.items():
        if keyword not in new:
            continue
        before = old.get(keyword)
        if before is None or (new[keyword] > before if lower else new[keyword] < before):
            was = "none" if before is None else before
            problems.append(f"{path}: {keyword} tightened from {was} to {new[keyword]}")
    return problems


def _compare_object(
    old: Schema, new: Schema, old_root: Schema, new_root: Schema, path: str
) -> list[str]:
    problems = []
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name, schema in old_props.items():
        if name not in new_props:
            problems.append(f"{path}.{name}: removed")
        else:
            problems += _compare(schema, new_props[name], old_root, new_root, f"{path}.{name}")
    for name in sorted(set(new.get("required", [])) - set(old.get("required", []))):
        problems.append(f"{path}.{name}: newly required")
    if new.get("additionalProperties") is False and old.get("additionalProperties") is not False:
        extra = [name for name in new_props if name not in old_props]
        problems.append(f"{path}: no longer accepts fields it does not declare ({extra or 'any'})")
    return problems


# ---- check and refresh ----


@dataclass(frozen=True)
class Finding:
    type_name: str
    snapshot: Path
    problems: tuple[str, ...]  # the breaking changes, by field path
    kind: str  # "breaking", "missing" (no snapshot), "stale" (not refreshed), "orphan"

    def message(self) -> str:
        where = _shown(self.snapshot)
        if self.kind == "missing":
            return f"{self.type_name}: no schema snapshot at {where}; run {REFRESH}"
        if self.kind == "orphan":
            return (
                f"{where}: no declared task type {self.type_name} any more; once its queue "
                "has drained, delete the snapshot"
            )
        if self.kind == "stale":
            return f"{self.type_name}: compatible change not yet in {where}; run {REFRESH}"
        name, _, version = self.type_name.rpartition(".v")
        base = name if version.isdigit() else self.type_name
        nxt = int(version) + 1 if version.isdigit() else 2
        lines = "\n".join(f"  {problem}" for problem in self.problems)
        return (
            f"{self.type_name}: breaking change to its payload model (snapshot {where}):\n"
            f"{lines}\n  Declare a new version (version={nxt}: wire name {base}.v{nxt}) and "
            "keep this one until its queue drains (README, 'Changing a payload model'); "
            f"if {self.type_name} was never released: {REFRESH} --accept-breaking "
            f"{self.type_name}"
        )


REFRESH = "python -m conveyor_dev.schema_gate --refresh"


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def findings(types: Registry) -> list[Finding]:
    """Every declared type whose snapshot is missing, stale or broken by its model, and every
    snapshot (in a package that declares types) no type declares any more."""
    found: list[Finding] = []
    directories: set[Path] = set()
    for declared in types.values():
        path = snapshot_path(declared)
        directories.add(path.parent)
        if not path.exists():
            found.append(Finding(declared.type_name, path, (), "missing"))
            continue
        recorded = json.loads(path.read_text())
        current = snapshot_of(declared)
        problems = breaking_changes(recorded["schema"], current["schema"])
        if problems:
            found.append(Finding(declared.type_name, path, tuple(problems), "breaking"))
        elif recorded != current:
            found.append(Finding(declared.type_name, path, (), "stale"))
    for directory in sorted(directories):
        for path in sorted(directory.glob("*.json")):
            if path.stem not in types:
                found.append(Finding(path.stem, path, (), "orphan"))
    return found


def refresh(types: Registry, accept_breaking: Iterable[str] = ()) -> list[Finding]:
    """Write the snapshot of every type that has none or changed compatibly (or is named in
    `accept_breaking`); returns what it left: breaking changes and orphans."""
    accepted = set(accept_breaking)
    left = []
    for finding in findings(types):
        if finding.kind == "orphan" or (
            finding.kind == "breaking" and finding.type_name not in accepted
        ):
            left.append(finding)
            continue
        finding.snapshot.parent.mkdir(parents=True, exist_ok=True)
        snapshot = snapshot_of(types[finding.type_name])
        finding.snapshot.write_text(json.dumps(snapshot, indent=2, sort_keys=True) + "\n")
    return left


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conveyor_dev.schema_gate")
    parser.add_argument("--refresh", action="store_true", help="write new/compatible snapshots")
    parser.add_argument("--accept-breaking", nargs="*", default=[], metavar="TYPE")
    parser.add_argument("--modules", help="task modules (default: the repository's)")
    args = parser.parse_args(argv)
    modules = parse_modules(args.modules) if args.modules else declared_modules()
    types = load(modules)
    left = refresh(types, args.accept_breaking) if args.refresh else findings(types)
    for finding in left:
        print(finding.message(), file=sys.stderr)
    if not left:
        print(f"{len(types)} task types match their schema snapshots")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
