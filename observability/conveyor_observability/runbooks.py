"""Runbooks (runbooks/<AlertName>.md): their sections and the code they ask people to paste."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent

from conveyor_observability.paths import RUNBOOKS_DIR

REQUIRED_SECTIONS = ("Meaning", "Impact", "Diagnosis", "Mitigation", "Verify", "Escalation")
INDEX = "README.md"  # conventions shared by all runbooks; not a runbook itself
# ```bash, or ```bash aws / ```bash local for a block that runs in one shell only (an AWS-only
# block is followed by its local twin); the fence may be indented in a list item.
_FENCE_RE = re.compile(r"^\s*```\s*([A-Za-z0-9_-]*)(?:\s+(aws|local))?\s*$")
SHELLS = ("aws", "local")
_SECTION_RE = re.compile(r"^##\s+(.+?)\s*$")


@dataclass(frozen=True)
class CodeBlock:
    language: str
    text: str
    line: int  # 1-based line of the opening fence
    shell: str = ""  # "aws" or "local" when the block runs in that shell only; "": in both

    def runs_in(self, shell: str) -> bool:
        return self.shell in ("", shell)


@dataclass(frozen=True)
class Runbook:
    path: Path
    sections: tuple[str, ...]
    blocks: tuple[CodeBlock, ...]

    @property
    def alert(self) -> str:
        return self.path.stem

    def code(self, language: str) -> list[CodeBlock]:
        return [block for block in self.blocks if block.language == language]

    def shell_commands(self) -> list[str]:
        """Command lines of the ```bash blocks: continuations joined, comments dropped."""
        commands = []
        for block in self.code("bash"):
            joined = re.sub(r"\\\n\s*", " ", block.text)
            commands += [
                line.strip()
                for line in joined.splitlines()
                if line.strip() and not line.strip().startswith("#")
            ]
        return commands


def parse_runbook(path: Path) -> Runbook:
    sections: list[str] = []
    blocks: list[CodeBlock] = []
    fence: tuple[str, str, int, list[str]] | None = None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fence_match = _FENCE_RE.match(line)
        if fence is not None:
            if line.strip() == "```":
                text = dedent("\n".join(fence[3])).strip()
                blocks.append(CodeBlock(fence[0], text, fence[2], fence[1]))
                fence = None
            else:
                fence[3].append(line)
        elif fence_match:
            fence = (fence_match.group(1), fence_match.group(2) or "", number, [])
        elif section := _SECTION_RE.match(line):
            sections.append(section.group(1))
    if fence is not None:
        raise ValueError(f"{path}: code block opened at line {fence[2]} is never closed")
    return Runbook(path=path, sections=tuple(sections), blocks=tuple(blocks))


def runbook_files(directory: Path = RUNBOOKS_DIR) -> list[Path]:
    return sorted(path for path in directory.glob("*.md") if path.name != INDEX)


def load_runbooks(directory: Path = RUNBOOKS_DIR) -> list[Runbook]:
    return [parse_runbook(path) for path in runbook_files(directory)]
