"""Every generated artefact, and which files on disk are stale."""

from __future__ import annotations

from pathlib import Path

from conveyor_observability.dashboards import rendered_dashboards
from conveyor_observability.paths import DASHBOARDS_DIR, PROMTOOL_TESTS_DIR, RULES_DIR
from conveyor_observability.promtool_test_files import rendered_test_files
from conveyor_observability.provenance import is_generated
from conveyor_observability.rule_files import rendered_rule_files
from conveyor_observability.spec import Spec


def generated_files(spec: Spec) -> dict[Path, str]:
    """Path -> the content the generator produces for it."""
    return {**rendered_rule_files(spec), **rendered_test_files(spec), **rendered_dashboards(spec)}


def owned_files() -> set[Path]:
    """Files on disk the generator is responsible for: everything in rules/ and dashboards/,
    and the promtool tests carrying the generated header (hand-written ones live beside them)."""
    owned = set(RULES_DIR.glob("*")) | set(DASHBOARDS_DIR.glob("*"))
    owned |= {p for p in PROMTOOL_TESTS_DIR.glob("*.yaml") if is_generated(p.read_text())}
    return owned


def stale_files(expected: dict[Path, str]) -> dict[Path, str]:
    """Path -> why it is stale: missing, out of date, or no longer generated."""
    stale = {}
    for path, content in expected.items():
        if not path.exists():
            stale[path] = "missing"
        elif path.read_text() != content:
            stale[path] = "out of date"
    for path in owned_files() - expected.keys():
        stale[path] = "no longer generated"
    return stale
