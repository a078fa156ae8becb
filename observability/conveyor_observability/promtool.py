"""Running promtool: rule checks, rule unit tests, and parse checks for loose expressions."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

PROMTOOL = "promtool"


def promtool_path() -> str | None:
    """promtool on PATH (Debian package `prometheus`), or None."""
    return shutil.which(PROMTOOL)


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, check=False, timeout=600
    )


def check_rules(paths: Sequence[Path]) -> subprocess.CompletedProcess[str]:
    return run_promtool("check", "rules", *paths)


def run_rule_tests(path: Path) -> subprocess.CompletedProcess[str]:
    return run_promtool("test", "rules", path)


def check_expressions(expressions: Sequence[tuple[str, str]]) -> subprocess.CompletedProcess[str]:
    """Parse-check (where, expr) pairs by loading each as a recording rule; promtool's output
    names the failing group, which is `where`."""
    groups = [
        {"name": f"{index}: {where}", "rules": [{"record": f"check:expr_{index}", "expr": expr}]}
        for index, (where, expr) in enumerate(expressions)
    ]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "expressions.rules.yaml"
        path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        return check_rules([path])


Result = subprocess.CompletedProcess[str]


def run_parallel(jobs: Mapping[str, Callable[[], Result]]) -> dict[str, Result]:
    """Run promtool jobs side by side (the SLO test files take seconds each)."""
    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}
