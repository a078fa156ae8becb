"""The product holds no development harness, and its imports run one way.

The service image builds a wheel from pyproject.toml, services/ and the fork's handlers/
alone (infra/image/Dockerfile); these tests build that same wheel and read the import
statements of every layer, so that fault injection, failpoint actions, the emulators and the
demo handlers are absent from a deployed stack, not merely switched off.
"""

from __future__ import annotations

import ast
import re
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
    # A fork's task packages run in the image, where only the product is installed.
    REPO / "handlers": {"conveyor_dev", "conveyor_infra", "conveyor_observability"},
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


def test_the_image_package_holds_the_product_and_the_forks_task_packages(tmp_path: Path):
    """Build the package as the Dockerfile does, from pyproject.toml, services/ and handlers/
    only (setuptools' build_py: what the wheel is made of, without needing `wheel` here), with a
    fork's task package under handlers/, which its workers must be able to import."""
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    dockerfile = (REPO / "infra" / "image" / "Dockerfile").read_text()
    roots = re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.MULTILINE)
    assert roots == ["services", "handlers"], roots
    for root in roots:
        shutil.copytree(REPO / root, tmp_path / root, ignore=shutil.ignore_patterns("__pycache__"))
    fork_package = tmp_path / "handlers" / "forkday_invoices"
    fork_package.mkdir()
    (fork_package / "__init__.py").write_text("")
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
    assert {name.split("/")[0] for name in modules} == {"conveyor", "forkday_invoices"}
    assert "conveyor/worker/runner.py" in modules  # the build did package the product
    harness = [m for m in modules if any(w in m for w in ("local/", "faults", "demo", "soak"))]
    assert harness == []
