"""The product holds no development harness, and its imports run one way.

The service image builds a wheel from pyproject.toml and services/ alone (infra/image/
Dockerfile); these tests build that same wheel and read the import statements of every layer,
so that fault injection, failpoint actions, the emulators and the demo handlers are absent
from a deployed stack, not merely switched off.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# layer directory -> top-level packages it must never import
FORBIDDEN = {
    REPO / "services" / "conveyor": {"conveyor_dev", "conveyor_infra", "conveyor_observability"},
    REPO / "infra" / "conveyor_infra": {"conveyor_dev"},
    REPO / "observability" / "conveyor_observability": {"conveyor_dev"},
}


def _imported_packages(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_import_runs_back_up_a_layer(layer: Path):
    offenders = {
        path.relative_to(REPO).as_posix(): sorted(_imported_packages(path) & FORBIDDEN[layer])
        for path in layer.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_image_package_holds_only_the_product(tmp_path: Path):
    """Build the package as the Dockerfile does, from pyproject.toml and services/ only
    (setuptools' build_py: what the wheel is made of, without needing `wheel` here)."""
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    shutil.copytree(
        REPO / "services", tmp_path / "services", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import setuptools; setuptools.setup()",
            "-q",
            "build_py",
            "--build-lib",
            str(tmp_path / "built"),
        ],
        cwd=tmp_path,
        check=True,
        timeout=300,
    )
    built = tmp_path / "built"
    modules = {p.relative_to(built).as_posix() for p in built.rglob("*.py")}
    assert {name.split("/")[0] for name in modules} == {"conveyor"}
    assert "conveyor/worker/runner.py" in modules  # the build did package the product
    harness = [m for m in modules if any(w in m for w in ("local/", "faults", "demo", "soak"))]
    assert harness == []
