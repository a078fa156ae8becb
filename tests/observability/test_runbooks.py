"""Runbooks: one per alert, complete, linked from the alert, with commands that work."""

from __future__ import annotations

import pytest
from conveyor_observability.cli_surface import CliUsageError, check_conveyor_command
from conveyor_observability.inventory import alerting_rules
from conveyor_observability.paths import REPO_ROOT, RUNBOOKS_DIR
from conveyor_observability.runbooks import REQUIRED_SECTIONS, Runbook, load_runbooks
from conveyor_observability.spec import Spec

RUNBOOKS = {runbook.alert: runbook for runbook in load_runbooks()}


def test_every_alert_has_a_runbook_and_every_runbook_an_alert() -> None:
    alerts = set(alerting_rules())
    assert sorted(alerts - RUNBOOKS.keys()) == [], "alerts without a runbook"
    assert sorted(RUNBOOKS.keys() - alerts) == [], "runbooks without an alert"


@pytest.mark.parametrize("alert", sorted(alerting_rules()))
def test_runbook_url_points_at_the_runbook_in_this_repository(alert: str, spec: Spec) -> None:
    url = alerting_rules()[alert]["annotations"]["runbook_url"]
    assert url.startswith(spec.runbook_base_url + "/")
    path = REPO_ROOT / url.removeprefix(spec.runbook_base_url + "/")
    assert path.is_file(), f"{alert}: {url} has no file at {path}"
    assert path.parent == RUNBOOKS_DIR


@pytest.mark.parametrize("runbook", RUNBOOKS.values(), ids=RUNBOOKS.keys())
def test_runbook_has_every_section_in_order(runbook: Runbook) -> None:
    assert list(runbook.sections) == list(REQUIRED_SECTIONS)


@pytest.mark.parametrize("runbook", RUNBOOKS.values(), ids=RUNBOOKS.keys())
def test_runbook_gives_promql_and_commands_to_paste(runbook: Runbook) -> None:
    assert runbook.code("promql"), "no ```promql block"
    assert runbook.code("bash"), "no ```bash block"
    languages = {block.language for block in runbook.blocks}
    assert languages <= {"promql", "bash"}, f"untagged or unchecked code blocks: {languages}"


@pytest.mark.parametrize("runbook", RUNBOOKS.values(), ids=RUNBOOKS.keys())
def test_runbook_conveyor_commands_are_on_the_cli_surface(runbook: Runbook) -> None:
    commands = [line for line in runbook.shell_commands() if line.startswith("conveyor ")]
    problems = []
    for line in commands:
        try:
            check_conveyor_command(line)
        except CliUsageError as exc:
            problems.append(str(exc))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "line",
    [
        "conveyor submit report.build --payload '{\"id\": 7}' --key k-1 --max-attempts 3 --wait",
        'conveyor get "$TASK_ID"',
        "conveyor list --state DEAD --type report.build --limit 20",
        'conveyor cancel "$TASK_ID" --reason "blocking its message group"',
        'conveyor watch "$TASK_ID"',
        "conveyor dlq inspect --limit 50",
        'conveyor dlq redrive --task-id "$A" --task-id "$B" --limit 10 --yes',
        "conveyor outbox status",
        "conveyor queue stats | tee stats.txt",
        "conveyor dlq inspect --limit 1000 > dlq.txt",
    ],
)
def test_cli_surface_accepts_the_documented_commands(line: str) -> None:
    check_conveyor_command(line)


@pytest.mark.parametrize(
    "line",
    [
        "conveyor dlq purge",
        "conveyor dlq redrive --all",
        "conveyor list --state DONE",
        "conveyor list --limit many",
        "conveyor get",
        "conveyor submit report.build --max 3",
        "conveyor queue",
        "conveyor outbox status --json",
        "aws sqs purge-queue --queue-url x",
    ],
)
def test_cli_surface_rejects_anything_else(line: str) -> None:
    with pytest.raises(CliUsageError):
        check_conveyor_command(line)


@pytest.mark.parametrize("runbook", RUNBOOKS.values(), ids=RUNBOOKS.keys())
def test_every_aws_only_block_has_a_local_twin_and_the_rest_need_no_pulumi(runbook: Runbook):
    """Blocks run in both shells unless marked (```bash aws / ```bash local); an AWS-only block
    is followed by its local twin, and an unmarked one names the endpoint it calls."""
    shell_blocks = runbook.code("bash")
    for block, after in zip(shell_blocks, [*shell_blocks[1:], None], strict=True):
        if block.shell == "aws":
            assert after is not None and after.shell == "local", (
                f"line {block.line}: an AWS-only block without a ```bash local twin after it"
            )
        if block.shell == "":
            assert "pulumi" not in block.text, f"line {block.line}: pulumi in a block for both"
            for line in block.text.splitlines():
                if line.lstrip().startswith("aws "):
                    assert "--endpoint-url" in line, f"line {block.line}: {line}"
    assert shell_blocks[0].text.startswith("source runbooks/env.sh"), "first block: the env"
