"""Checks that a runbook's `conveyor ...` line is a command the real CLI accepts.

The line is parsed by the CLI's own command tree (services/conveyor/cli.py, built with typer),
so options, choices and required arguments are exactly what an on-call engineer will meet: a
runbook command the CLI does not accept fails them at the worst moment.
"""

from __future__ import annotations

import shlex
from typing import Any

import typer

# typer 0.29 ships its own copy of click; its command classes and errors live here (pinned).
from typer._click.exceptions import ClickException

_SHELL_OPERATORS = frozenset("|&;<>()")


class CliUsageError(ValueError):
    pass


def command_words(line: str) -> list[str]:
    """The words of the first command on a shell line, up to a pipe, `;`, `&&` or redirection."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = []
    for word in lexer:
        if set(word) <= _SHELL_OPERATORS:
            break
        words.append(word)
    return words


def _parse(command: Any, name: str, args: list[str], parent: Any = None) -> None:
    """Parse `args` down the command tree without running anything."""
    context = command.make_context(name, list(args), parent=parent)
    if hasattr(command, "resolve_command"):  # a group: descend into the subcommand
        rest = [*getattr(context, "_protected_args", []), *context.args]
        sub_name, sub_command, sub_args = command.resolve_command(context, rest)
        _parse(sub_command, sub_name, sub_args, context)


def check_conveyor_command(line: str) -> None:
    """Raise CliUsageError unless `line` runs a `conveyor` command the CLI accepts."""
    from conveyor.cli import app

    words = command_words(line)
    if not words or words[0] != "conveyor":
        raise CliUsageError(f"not a conveyor command: {line!r}")
    try:
        _parse(typer.main.get_command(app), "conveyor", words[1:])
    except ClickException as exc:
        raise CliUsageError(f"{line!r}: {exc.format_message()}") from None
