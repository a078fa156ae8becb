"""The `conveyor` CLI as a user runs it: a real subprocess against the running system."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from conveyor.v1 import task_service_pb2 as pb
from support import cli, get, path_of, submit, wait_for, wait_terminal

pytestmark = pytest.mark.integration


def test_submit_wait_get_and_list(system):
    done = cli(
        system, "acme", "submit", "demo.sleep", "--payload", '{"seconds": 0.05}', "--wait", "--json"
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    task = document["task"]
    assert document["created"] is True
    assert task["state"] == "SUCCEEDED"

    shown = cli(system, "acme", "get", task["task_id"])
    assert shown.returncode == 0, shown.stderr
    for state in ("PENDING", "QUEUED", "RUNNING", "SUCCEEDED"):
        assert state in shown.stdout

    assert re.fullmatch(r"[0-9a-f]{32}", task["trace_id"])
    assert task["trace_id"] in shown.stdout  # from the alert's trace to the task and back

    listed = cli(system, "acme", "list", "--type", "demo.sleep", "--limit", "50", "--json")
    assert listed.returncode == 0, listed.stderr
    [same] = [t for t in json.loads(listed.stdout) if t["task_id"] == task["task_id"]]
    assert same["payload"] == {"json": {"seconds": 0.05}}  # as get --json shows it
    assert same == task

    other = cli(system, "globex", "get", task["task_id"])
    assert other.returncode == 1
    assert "NOT_FOUND" in other.stderr + other.stdout


def test_submit_with_a_key_is_idempotent_from_the_cli(system):
    args = ("submit", "demo.sleep", "--payload", "{}", "--key", "cli-key-1", "--json")
    first = json.loads(cli(system, "acme", *args).stdout)
    second = json.loads(cli(system, "acme", *args).stdout)
    assert first["created"] is True and second["created"] is False
    assert first["task"]["task_id"] == second["task"]["task_id"]


def test_submit_a_delayed_task_with_a_deadline_from_the_cli(system):
    now = dt.datetime.now(dt.UTC)
    due = (now + dt.timedelta(seconds=2)).isoformat()
    deadline = (now + dt.timedelta(hours=1)).isoformat()
    args = ("submit", "demo.sleep", "--payload", "{}", "--not-before", due, "--start-by", deadline)
    done = cli(system, "acme", *args, "--wait", "--json")
    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout)["task"]
    assert task["state"] == "SUCCEEDED"
    assert task["not_before"] == dt.datetime.fromisoformat(due).isoformat(
        timespec="milliseconds"
    ).replace("+00:00", "Z")
    assert task["start_by"] is not None

    zoneless = cli(system, "acme", "submit", "demo.sleep", "--not-before", "2030-01-01T09:00")
    assert zoneless.returncode == 2
    assert "zone" in zoneless.stderr + zoneless.stdout


def test_submit_without_a_payload_sends_the_empty_document(system):
    """A type without parameters (or with defaults for all) needs no --payload: it was
    refused with "Invalid JSON" about a payload the user never gave."""
    done = cli(system, "acme", "submit", "demo.noop", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["task"]["state"] == "SUCCEEDED"


def test_bad_payload_is_refused_before_any_call(system):
    result = cli(system, "acme", "submit", "demo.sleep", "--payload", "{not json")
    assert result.returncode == 2
    assert "payload" in (result.stderr + result.stdout).lower()


def test_dlq_redrive_gives_a_dead_task_another_run(system, acme):
    dead = wait_terminal(acme, submit(acme, "demo.poison", max_attempts=1).task.task_id)
    assert dead.state == pb.TASK_STATE_DEAD
    wait_for(
        lambda: dead.task_id in cli(system, "acme", "dlq", "inspect", "--limit", "50").stdout,
        20,
        "the DLQ to list the dead task",
    )

    redrive = cli(system, "acme", "dlq", "redrive", "--task-id", dead.task_id, "--yes")

    assert redrive.returncode == 0, redrive.stderr
    assert "redriven" in redrive.stdout
    # The poison handler fails again: back to DEAD, through PENDING and QUEUED, attempts reset.
    wait_for(
        lambda: path_of(get(acme, dead.task_id)).count("DEAD") == 2,
        30,
        "the redriven poison task to die again",
    )
    history = get(acme, dead.task_id)
    assert "redriven from the DLQ" in [e.detail for e in history.events]
    assert history.task.attempts == 1


def test_dlq_redrive_refuses_without_a_terminal_or_yes(system):
    result = cli(system, "acme", "dlq", "redrive", "--limit", "1")
    assert result.returncode == 2


def test_outbox_status_and_queue_stats(system):
    outbox = cli(system, "acme", "outbox", "status")
    assert outbox.returncode == 0, outbox.stderr
    assert re.search(r"\d", outbox.stdout)

    stats = cli(system, "acme", "queue", "stats")
    assert stats.returncode == 0, stats.stderr
    for word in ("main", "dlq", "visible", "inflight"):
        assert word in stats.stdout.lower()
