"""The `conveyor` CLI surface runbooks may use, and a checker for command lines against it.

The surface is a contract between the CLI and the runbooks (services/conveyor/cli.py says so):
a runbook command that the CLI does not accept fails the on-call engineer at the worst moment.
"""

from __future__ import annotations

import argparse
import shlex

TASK_STATES = ("PENDING", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "DEAD", "CANCELLED")
_SHELL_OPERATORS = frozenset("|&;<>()")


class CliUsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise CliUsageError(message)


def _subcommands(parser: argparse.ArgumentParser, dest: str) -> argparse._SubParsersAction:
    return parser.add_subparsers(dest=dest, required=True, parser_class=_Parser)


def _parser() -> argparse.ArgumentParser:
    root = _Parser(prog="conveyor", allow_abbrev=False)
    commands = _subcommands(root, "command")

    submit = commands.add_parser("submit", allow_abbrev=False)
    submit.add_argument("type")
    submit.add_argument("--payload")
    submit.add_argument("--key")
    submit.add_argument("--max-attempts", type=int)
    submit.add_argument("--wait", action="store_true")

    for name in ("get", "watch"):
        commands.add_parser(name, allow_abbrev=False).add_argument("task_id")

    listing = commands.add_parser("list", allow_abbrev=False)
    listing.add_argument("--state", choices=TASK_STATES)
    listing.add_argument("--type")
    listing.add_argument("--limit", type=int)

    cancel = commands.add_parser("cancel", allow_abbrev=False)
    cancel.add_argument("task_id")
    cancel.add_argument("--reason")

    dlq = _subcommands(commands.add_parser("dlq", allow_abbrev=False), "dlq_command")
    dlq.add_parser("inspect", allow_abbrev=False).add_argument("--limit", type=int)
    redrive = dlq.add_parser("redrive", allow_abbrev=False)
    redrive.add_argument("--task-id", action="append")
    redrive.add_argument("--limit", type=int)
    redrive.add_argument("--yes", action="store_true")

    outbox = _subcommands(commands.add_parser("outbox", allow_abbrev=False), "outbox_command")
    outbox.add_parser("status", allow_abbrev=False)
    queue = _subcommands(commands.add_parser("queue", allow_abbrev=False), "queue_command")
    queue.add_parser("stats", allow_abbrev=False)
    return root


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


def check_conveyor_command(line: str) -> None:
    """Raise CliUsageError unless `line` runs a `conveyor` command the CLI surface accepts."""
    words = command_words(line)
    if not words or words[0] != "conveyor":
        raise CliUsageError(f"not a conveyor command: {line!r}")
    try:
        _parser().parse_args(words[1:])
    except CliUsageError as exc:
        raise CliUsageError(f"{line!r}: {exc}") from None
