"""A fork's new package is installed by `make setup` and type-checked by `make lint` with no edit:
both derive from pyproject's source roots (checked with `make -n` in a scratch copy, which
prints what make would run without running it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from conveyor_dev import source_tree

REPO = source_tree.REPO_ROOT
INSTALL = '-e ".['  # the editable install of the project's packages
NEEDED = ["Makefile", "pyproject.toml", "constraints.txt", "emulators", "dev/conveyor_dev"]


def test_mypy_resolves_imports_from_exactly_the_source_roots() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["tool"]["mypy"]["mypy_path"] == source_tree.source_roots()
    assert "handlers" in source_tree.source_roots()


def _make_dry_run(repo: Path, target: str) -> str:
    done = subprocess.run(
        ["make", "-n", target, f"PYTHON={sys.executable}", "VENV=venv"],
        cwd=repo, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout


def test_a_new_fork_package_is_linted_and_triggers_a_reinstall(tmp_path: Path) -> None:
    for relative in NEEDED:
        source, target = REPO / relative, tmp_path / relative
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for root in source_tree.source_roots():
        (tmp_path / root).mkdir(exist_ok=True)
    stamp = tmp_path / "venv" / ".installed"
    stamp.parent.mkdir()
    stamp.touch()
    installed = stamp.stat().st_mtime
    for root in source_tree.source_roots():  # everything older than the install
        os.utime(tmp_path / root, (installed - 60, installed - 60))
    assert INSTALL not in _make_dry_run(tmp_path, "venv/.installed")

    package = tmp_path / "handlers" / "invoices"
    package.mkdir()
    (package / "__init__.py").write_text('"""A fork\'s task types."""\n')
    os.utime(tmp_path / "handlers", (installed + 60, installed + 60))
    assert INSTALL in _make_dry_run(tmp_path, "venv/.installed")
    (mypy,) = [line for line in _make_dry_run(tmp_path, "lint").splitlines() if "mypy" in line]
    assert mypy.split()[1:] == [*source_tree.packages(tmp_path)]
    assert "handlers/invoices" in mypy.split()
