"""`conveyor` argument validation, configuration errors and the operator commands' output.

Operator commands run against a stand-in for `conveyor.ops` that returns the real ops result
types, so these tests pin the CLI's side of that contract without AWS.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import types
import uuid
from collections.abc import Iterator
from typing import Any

import conveyor
import pytest
from botocore.exceptions import EndpointConnectionError
from conveyor import cli, ops
from conveyor.dlq_filter import ANY, DlqFilter
from typer.testing import CliRunner

TASK_ID = "0123456789abcdef0123456789abcdef"
WIDE = {"COLUMNS": "200"}  # keep rich tables on one line per row


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A runner whose environment holds no Conveyor or AWS configuration."""
    for name in list(os.environ):
        if name.startswith(("CONVEYOR_", "AWS_")):
            monkeypatch.delenv(name)
    return CliRunner()


@pytest.mark.parametrize("payload", ["{bad", "{'single': 'quotes'}", ""])
def test_bad_json_payload_is_a_usage_error(runner, payload):
    result = runner.invoke(cli.app, ["submit", "email.send", "--payload", payload])
    assert result.exit_code == 2
    assert "--payload" in result.output and "not valid JSON" in result.output


def test_oversized_payload_is_a_usage_error(runner):
    big = '"' + "x" * (64 * 1024) + '"'
    result = runner.invoke(cli.app, ["submit", "email.send", "--payload", big])
    assert result.exit_code == 2
    assert "the limit is 65536" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "Not A Type"],
        ["submit", "email.send", "--key", "has spaces"],
        ["submit", "email.send", "--max-attempts", "0"],
        ["submit", "email.send", "--max-attempts", "21"],
        ["get", "not-a-task-id"],
        ["cancel", TASK_ID, "--reason", "x" * 257],
        ["watch", TASK_ID.upper()],
        ["list", "--limit", "-1"],
        ["list", "--type", "Bad Type"],
        ["get", TASK_ID, "--timeout", "0"],
        ["dlq", "redrive", "--task-id", "nope", "--yes"],
    ],
)
def test_invalid_arguments_exit_2_before_any_connection(runner, args):
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 2, result.output
    assert "CONVEYOR_API_ADDRESS" not in result.output  # rejected before config is read


def test_bad_state_name_lists_the_states(runner):
    result = runner.invoke(cli.app, ["list", "--state", "sleeping"], env=WIDE)
    assert result.exit_code == 2
    assert "--state" in result.output
    for state in ("pending", "queued", "running", "succeeded", "failed", "dead", "cancelled"):
        assert state in result.output


def test_state_names_are_case_insensitive(runner):
    # Accepted: the command gets as far as reading its configuration.
    result = runner.invoke(cli.app, ["list", "--state", "Queued"])
    assert result.exit_code == 2 and "CONVEYOR_API_ADDRESS" in result.output


def test_missing_api_config_lists_the_variables(runner):
    result = runner.invoke(cli.app, ["get", TASK_ID])
    assert result.exit_code == 2
    for name in (
        "CONVEYOR_API_ADDRESS",
        "CONVEYOR_TLS_CA_FILE",
        "CONVEYOR_TLS_CERT_FILE",
        "CONVEYOR_TLS_KEY_FILE",
    ):
        assert name in result.stderr
    assert "Traceback" not in result.output


def test_generated_key_is_shown_even_when_the_call_cannot_be_made(runner):
    result = runner.invoke(cli.app, ["submit", "email.send"])
    assert result.exit_code == 2
    assert "idempotency key: " in result.stderr and "--key" in result.stderr


def test_missing_ops_config_lists_the_variables(runner):
    result = runner.invoke(cli.app, ["queue", "stats"])
    assert result.exit_code == 2
    assert "invalid configuration" in result.stderr
    assert "AWS_REGION" in result.stderr and "CONVEYOR_TABLE_NAME" in result.stderr


OTHER_ID = "fedcba9876543210fedcba9876543210"
DEAD_LETTERS = [
    ops.DlqEntry(TASK_ID, "email.send", "DEAD", 5, "smtp [550] refused", "m-1"),
    ops.DlqEntry(OTHER_ID, "email.send", "DEAD", 5, "smtp [550] refused", "m-2"),
    ops.DlqEntry("ab" * 16, "demo.poison", "DEAD", 1, "RuntimeError: poison", "m-3"),
]


class FakeOps(types.SimpleNamespace):
    """Records calls; returns fixed values of the real ops types."""


@pytest.fixture
def fake_ops(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOps]:
    calls: list[tuple[str, Any]] = []
    handle = object()

    def dlq_redrive(o, task_ids, limit, where=ANY):
        assert o is handle
        calls.append(("dlq_redrive", (task_ids, limit) if where == ANY else (task_ids, where)))
        return [
            ops.RedriveResult(TASK_ID, "redriven", "DEAD -> PENDING -> QUEUED with attempts reset")
        ]

    def dlq_inspect(o, limit, where=ANY):
        assert o is handle
        calls.append(("dlq_inspect", limit if where == ANY else (limit, where)))
        return ops.DlqListing(DEAD_LETTERS[:limit], held_elsewhere=0)

    fake = FakeOps(
        calls=calls,
        from_env=lambda: handle,
        dlq_inspect=dlq_inspect,
        dlq_redrive=dlq_redrive,
        outbox_status=lambda o: ops.OutboxStatus(pending=3, oldest_age_seconds=12.25),
        queue_stats=lambda o: {
            "main": {"visible": 7, "inflight": 2, "delayed": 1},
            "dlq": {"visible": 4, "inflight": 0, "delayed": 0},
        },
    )
    # The commands do `from conveyor import ops`, which reads the package attribute.
    monkeypatch.setattr(conveyor, "ops", fake)
    yield fake


def test_dlq_inspect_shows_entries_verbatim(runner, fake_ops):
    result = runner.invoke(cli.app, ["dlq", "inspect", "--limit", "3"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert fake_ops.calls == [("dlq_inspect", 3)]
    assert TASK_ID in result.stdout
    assert "smtp [550] refused" in result.stdout  # brackets are data, not markup


def test_dlq_inspect_never_cuts_an_id_on_a_narrow_terminal(runner, fake_ops, monkeypatch):
    """Whole task ids (to paste into `get` and `redrive`) and still every other column: with
    SQS's 36-character message ids beside them, the others once shrank to nothing."""
    entries = [dataclasses.replace(e, message_id=str(uuid.uuid4())) for e in DEAD_LETTERS]
    monkeypatch.setattr(fake_ops, "dlq_inspect", lambda o, limit, where: ops.DlqListing(entries, 0))
    result = runner.invoke(cli.app, ["dlq", "inspect"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    for entry in entries:
        assert entry.task_id in result.stdout
    assert result.stdout.count("DEAD") == len(entries)


def test_dlq_inspect_json_carries_whole_entries(runner, fake_ops):
    result = runner.invoke(cli.app, ["dlq", "inspect", "--json", "--limit", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {
            "task_id": TASK_ID,
            "task_type": "email.send",
            "state": "DEAD",
            "attempts": 5,
            "last_error": "smtp [550] refused",
            "message_id": "m-1",
            "lane": "default",
        }
    ]


def test_dlq_inspect_groups_by_error_largest_first(runner, fake_ops):
    result = runner.invoke(cli.app, ["dlq", "inspect", "--group-by", "error", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"error": "smtp [550] refused", "count": 2, "task_ids": [TASK_ID, OTHER_ID]},
        {"error": "RuntimeError: poison", "count": 1, "task_ids": ["ab" * 16]},
    ]
    table = runner.invoke(cli.app, ["dlq", "inspect", "--group-by", "type"], env=WIDE)
    assert [row[:2] for row in _rows(table.stdout) if row[0]] == [
        ["2", "email.send"],
        ["1", "demo.poison"],
    ]


def test_dlq_filters_reach_ops_as_a_filter(runner, fake_ops):
    where = ["--type", "email.send", "--error", "smtp.*refused"]
    runner.invoke(cli.app, ["dlq", "inspect", *where])
    runner.invoke(cli.app, ["dlq", "redrive", *where, "--yes"])
    expected = DlqFilter("email.send", re.compile("smtp.*refused"))
    assert fake_ops.calls == [("dlq_inspect", (10, expected)), ("dlq_redrive", (None, expected))]


@pytest.mark.parametrize(
    ("args", "param"), [(["--error", "smtp("], "--error"), (["--type", "Bad Type"], "--type")]
)
def test_bad_dlq_filters_are_usage_errors(runner, fake_ops, args, param):
    for command in (["inspect"], ["redrive", "--yes"]):
        result = runner.invoke(cli.app, ["dlq", *command, *args], env=WIDE)
        assert result.exit_code == 2, result.output
        assert param in result.output
    assert fake_ops.calls == []


def test_dlq_inspect_warns_of_messages_it_could_not_list(runner, fake_ops, monkeypatch):
    monkeypatch.setattr(fake_ops, "dlq_inspect", lambda o, limit, where: ops.DlqListing([], 4))
    result = runner.invoke(cli.app, ["dlq", "inspect"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "4 DLQ message(s) are held by another reader" in result.stderr
    assert "held" not in result.stdout  # a file the table goes to holds only the table


def test_dlq_redrive_refuses_without_a_terminal_unless_yes(runner, fake_ops):
    result = runner.invoke(cli.app, ["dlq", "redrive"])
    assert result.exit_code == 2
    assert "--yes" in result.stderr
    assert fake_ops.calls == []


def test_dlq_redrive_with_yes_passes_ids_and_limit(runner, fake_ops):
    result = runner.invoke(
        cli.app, ["dlq", "redrive", "--task-id", TASK_ID, "--limit", "5", "--yes"], env=WIDE
    )
    assert result.exit_code == 0, result.output
    assert fake_ops.calls == [("dlq_redrive", ([TASK_ID], 5))]
    assert "redriven" in result.stdout


def test_dlq_redrive_without_ids_passes_none(runner, fake_ops):
    result = runner.invoke(cli.app, ["dlq", "redrive", "--yes"])
    assert result.exit_code == 0, result.output
    assert fake_ops.calls == [("dlq_redrive", (None, 10))]


@pytest.mark.parametrize(("answer", "redriven"), [("y\n", True), ("n\n", False)])
def test_dlq_redrive_asks_on_a_terminal(runner, fake_ops, monkeypatch, answer, redriven):
    monkeypatch.setattr(cli, "_interactive", lambda: True)
    result = runner.invoke(cli.app, ["dlq", "redrive", "--limit", "2"], input=answer)
    assert "Redrive up to 2 task(s) from the DLQ?" in result.output
    assert (fake_ops.calls == [("dlq_redrive", (None, 2))]) is redriven
    assert result.exit_code == (0 if redriven else 1)


def test_outbox_status(runner, fake_ops):
    result = runner.invoke(cli.app, ["outbox", "status"])
    assert result.exit_code == 0, result.output
    assert _rows(result.stdout) == [["pending marks", "3"], ["oldest age", "12.2 s"]]


def _rows(table_text: str) -> list[list[str]]:
    """The body rows of a rich table (its header uses a different rule character)."""
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in table_text.splitlines()
        if line.startswith("│")
    ]


def test_queue_stats(runner, fake_ops):
    result = runner.invoke(cli.app, ["queue", "stats"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert _rows(result.stdout) == [["main", "7", "2", "1"], ["dlq", "4", "0", "0"]]


def test_aws_errors_are_one_line_with_exit_1(runner, fake_ops):
    def unreachable(o):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    fake_ops.queue_stats = unreachable
    result = runner.invoke(cli.app, ["queue", "stats"])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("AWS error: Could not connect")
    assert len(result.stderr.strip().splitlines()) == 1
