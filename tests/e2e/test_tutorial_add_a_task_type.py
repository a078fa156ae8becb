"""README "Add a task type", executed: its blocks written into a scratch copy of the repository
(the tracked files), then the checks a fork runs, narrowed to what the new type touches so the
test costs minutes: ruff and mypy on the new package, its tests, the generate check, the SLO
spec tests and the infra tests of the new stack."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conveyor_dev import source_tree

REPO = source_tree.REPO_ROOT
SECTION = re.compile(r"^### Add a task type\n(.*?)^## ", re.M | re.S)
BLOCK = re.compile(r"^```\w+ file=(\S+)(?: replaces=([^\n]+))?\n(.*?)^```$", re.M | re.S)
BIN = Path(sys.executable).parent


def _scratch_copy(target: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for relative in filter(None, tracked):
        source = REPO / relative
        if source.is_file():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)


def _apply_tutorial(repo: Path) -> list[str]:
    section = SECTION.search((REPO / "README.md").read_text())
    assert section, "README has no 'Add a task type' section"
    written = []
    for path, replaces, content in BLOCK.findall(section[1]):
        target = repo / path
        if replaces:
            text = target.read_text()
            assert replaces in text, f"{path} has no {replaces!r} to replace"
            target.write_text(text.replace(replaces, content.rstrip("\n"), 1))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        written.append(path)
    return written


def _run(repo: Path, *command: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(repo / r) for r in source_tree.source_roots(repo))
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_add_a_task_type_tutorial_passes_its_checks(tmp_path: Path) -> None:
    repo = tmp_path / "fork"
    _scratch_copy(repo)
    written = _apply_tutorial(repo)
    assert written == [  # the fork's own files; none of Conveyor's
        "handlers/invoices/__init__.py",
        "handlers/invoices/test_invoices.py",
        "Pulumi.qa.yaml",
    ]
    _run(repo, str(BIN / "ruff"), "check", "handlers/invoices")
    _run(repo, str(BIN / "ruff"), "format", "--check", "handlers/invoices")
    _run(repo, str(BIN / "mypy"), "handlers/invoices")
    _run(repo, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "handlers")
    _run(repo, sys.executable, "-m", "conveyor_dev.schema_gate", "--refresh")
    assert (repo / "handlers/invoices/schemas/invoice.render.json").is_file()
    _run(repo, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/unit/test_schema_gate.py")  # fmt: skip
    _run(repo, sys.executable, "-m", "conveyor_observability.generate")
    _run(repo, sys.executable, "-m", "conveyor_observability.generate", "--check")
    assert (
        repo / "observability/rules/conveyor-task-success-invoice-render.slo.rules.yaml"
    ).is_file()
    outage = _run(
        repo, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "tests/observability/test_task_type_slos.py", "-k", "deployed_typed",
    )  # fmt: skip
    assert "1 passed" in outage  # invoice.render's outage burns its own SLO, not the global one
    _run(
        repo, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "tests/observability/test_slo_spec.py",
        "tests/infra/test_stack_config.py", "tests/infra/test_stack_compute.py",
        "tests/infra/test_stack_data_plane.py", "tests/infra/test_iam_documents.py",
        "tests/infra/test_policy_pack.py", "-k", "qa or slo_spec or every_resource",
    )  # fmt: skip
