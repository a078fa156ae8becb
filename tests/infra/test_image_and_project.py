"""The service image and the Pulumi project files agree with what the stacks declare."""

from __future__ import annotations

import json
import re
import tomllib

import yaml
from conveyor_dev.emulators.declared import Declaration
from conveyor_infra.paths import REPO_ROOT
from stack_support import SERVICES, container_definitions

DOCKERFILE = REPO_ROOT / "infra/image/Dockerfile"


def final_stage() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile's last stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1] if " " in line else "")
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith("#")
    ]
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def test_every_bind_mount_is_an_image_volume_owned_by_the_task_user(
    declarations: dict[str, Declaration],
) -> None:
    """Fargate creates a bind mount root-owned unless the image declares the path a VOLUME;
    then it copies the image's directory (owner, mode) into it."""
    declaration = declarations["prod"]
    stage = final_stage()
    volumes = {
        path
        for name, args in stage
        if name == "VOLUME"
        for path in (json.loads(args) if args.startswith("[") else args.split())
    }
    runs = " && ".join(args for name, args in stage if name == "RUN")
    (user,) = [args for name, args in stage if name == "USER"]
    for service in SERVICES:
        app = next(c for c in container_definitions(declaration, service) if c["name"] == service)
        assert app["user"] == user
        for mount in app["mountPoints"]:
            path = mount["containerPath"]
            assert path in volumes, f"{path} is bind-mounted but not a VOLUME of the image"
            assert f"chown {user} {path}" in runs, f"{path} is not owned by {user}"
    names = [name for name, _ in stage]
    assert names.index("VOLUME") < names.index("USER")


def test_pulumis_pip_toolchain_has_a_requirements_file_with_the_infra_extras() -> None:
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    assert project["runtime"]["options"]["toolchain"] == "pip"
    # Pulumi's pip toolchain reads requirements.txt in the program directory (`main`) and runs
    # pip there; `-c` is relative to the file, the package path to pip's directory.
    program = REPO_ROOT / project["main"]
    requirements = (program / "requirements.txt").read_text().splitlines()
    lines = [line.strip() for line in requirements if line.strip() and not line.startswith("#")]
    assert lines == ["-c ../constraints.txt", "-e ..[infra]"]
    assert (program / "../constraints.txt").resolve() == REPO_ROOT / "constraints.txt"
    assert (program / "..").resolve() == REPO_ROOT
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    infra = [
        dep.split("==")[0].lower() for dep in pyproject["project"]["optional-dependencies"]["infra"]
    ]
    assert {"pulumi", "pulumi-aws", "pulumi-tls", "pulumi-policy"} <= set(infra)
    assert set(infra) <= pinned
