"""The project's source roots and top-level packages, read from pyproject.toml.

pyproject's `[tool.setuptools.packages.find] where` is the one list: `pip install -e .` installs
every package under those roots, and the Makefile asks this script what to lint and when to
reinstall. A fork's task packages go under `handlers/`, one of the roots, so a new package is
installed by `make setup` and type-checked by `make lint` with no edit anywhere. Standard
library only: the Makefile runs it before the virtualenv exists.

    python dev/conveyor_dev/source_tree.py roots|packages
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def source_roots(repo_root: Path = REPO_ROOT) -> list[str]:
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text())
    roots: list[str] = pyproject["tool"]["setuptools"]["packages"]["find"]["where"]
    return roots


def packages(repo_root: Path = REPO_ROOT) -> list[str]:
    """Each root's top-level packages (directories with an __init__.py), as root/package."""
    return [
        f"{root}/{init.parent.name}"
        for root in source_roots(repo_root)
        for init in sorted((repo_root / root).glob("*/__init__.py"))
    ]


if __name__ == "__main__":
    listing = {"roots": source_roots, "packages": packages}[sys.argv[1]]()
    print(" ".join(listing))
