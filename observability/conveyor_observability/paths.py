"""Where the observability artefacts live in the repository."""

from __future__ import annotations

from pathlib import Path

OBSERVABILITY_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = OBSERVABILITY_DIR.parent
SPEC_PATH = OBSERVABILITY_DIR / "slos.yaml"
RULES_DIR = OBSERVABILITY_DIR / "rules"
DASHBOARDS_DIR = OBSERVABILITY_DIR / "dashboards"
PROMTOOL_TESTS_DIR = OBSERVABILITY_DIR / "tests"
COLLECTOR_DIR = OBSERVABILITY_DIR / "collector"
RUNBOOKS_DIR = REPO_ROOT / "runbooks"
