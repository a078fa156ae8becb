"""`conveyor`: the command line for people and runbooks.

Task commands talk to the API through conveyor.client (mTLS, retries within each call's
deadline); operator commands (dlq, outbox, queue) talk to AWS
directly through `conveyor.ops`. The command surface is a contract: runbooks call it.

Exit codes: 0 success; 1 the API or AWS returned an error (one line: code and details);
2 bad usage or configuration; 3 (`watch`, `submit --wait`) the task ended in a state other
than SUCCEEDED.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, NoReturn

import typer
from botocore.exceptions import BotoCoreError, ClientError
from google.protobuf import json_format
from rich.console import Console

from conveyor import cli_output as out
from conveyor.client import Client, ConveyorError
from conveyor.client.sync import DEFAULT_IDLE_SECONDS, DEFAULT_TIMEOUT_SECONDS
from conveyor.dlq_filter import DlqFilter
from conveyor.domain import (
    DEFAULT_LANE,
    IDEMPOTENCY_KEY_RE,
    LANES,
    MAX_ATTEMPTS_LIMIT,
    MAX_PAYLOAD_BYTES,
    MAX_REASON_CHARS,
    TASK_ID_RE,
    TASK_TYPE_RE,
    TaskState,
)
from conveyor.settings import ConfigError
from conveyor.v1 import task_service_pb2 as pb

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TASK_UNSUCCESSFUL = 3

app = typer.Typer(
    help="Submit, follow and cancel tasks; inspect and repair the queues.",
    epilog="Exit codes: 0 success; 1 API or AWS error; 2 bad usage or configuration; "
    "3 the task ended unsuccessfully (watch, submit --wait).",
    no_args_is_help=True,
    add_completion=False,
)
dlq_app = typer.Typer(help="Inspect and redrive the dead-letter queue.", no_args_is_help=True)
outbox_app = typer.Typer(help="The transactional outbox.", no_args_is_help=True)
queue_app = typer.Typer(help="The SQS queues.", no_args_is_help=True)
schedule_app = typer.Typer(help="Recurring schedules (cron).", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(outbox_app, name="outbox")
app.add_typer(queue_app, name="queue")
app.add_typer(schedule_app, name="schedule")

Timeout = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=0.001,
        help="Give up after this many seconds (retries of UNAVAILABLE included).",
    ),
]
IdleTimeout = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=0.001,
        help="Give up when the server sends nothing for this many seconds (a listing has no "
        "total deadline: its length is the data's).",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
TaskId = Annotated[str, typer.Argument(metavar="TASK_ID", help="32 lowercase hex digits.")]


def _stdout() -> Console:
    return Console(highlight=False)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _fail(message: str, code: int) -> NoReturn:
    _stderr().print(message, markup=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def _reported_errors() -> Iterator[None]:
    """Turn the expected failures into one readable line and the documented exit code."""
    try:
        yield
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
    except ConveyorError as exc:
        lines = [f"error: {exc.code.name}: {exc.details}"]
        lines += [f"  {v.field}: {v.description}" for v in exc.violations]
        _fail("\n".join(lines), EXIT_ERROR)
    except (BotoCoreError, ClientError) as exc:
        _fail(f"AWS error: {exc}", EXIT_ERROR)


def _client(timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Client:
    """A client from the environment; `timeout` is its unary calls' budget, or its streams'
    idle timeout."""
    return Client.from_env(timeout=timeout, idle_timeout=timeout)


def _interactive() -> bool:
    """Whether a person can answer a confirmation prompt."""
    return sys.stdin.isatty()


def _require(pattern: re.Pattern[str], value: str, param: str) -> None:
    """Reject locally what the API would reject, with the same rule, before connecting."""
    if not pattern.fullmatch(value):
        raise typer.BadParameter(f"{value!r} does not match {pattern.pattern}", param_hint=param)


def _payload_bytes(text: str | None) -> bytes:
    """The payload as compact JSON, so the same document always hashes the same for
    idempotency however it was spaced on the command line. None (no --payload) is the empty
    document: a type without parameters needs none, and one with parameters names those
    missing."""
    if text is None:
        return b"{}"
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="'--payload'") from None
    body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > MAX_PAYLOAD_BYTES:
        raise typer.BadParameter(
            f"{len(body)} bytes; the limit is {MAX_PAYLOAD_BYTES}", param_hint="'--payload'"
        )
    return body


def _exit_for(task: pb.Task) -> None:
    if task.state != pb.TASK_STATE_SUCCEEDED:
        raise typer.Exit(EXIT_TASK_UNSUCCESSFUL)


def _moment(value: str | None, option: str) -> dt.datetime | None:
    """An absolute, zone-aware time from ISO 8601 (a retry with the same --key must send the
    same time, so no relative delays)."""
    if value is None:
        return None
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time", param_hint=option) from None
    if at.tzinfo is None:
        raise typer.BadParameter(f"{value!r} needs a zone (Z or +01:00)", param_hint=option)
    return at


@app.command()
def submit(
    task_type: Annotated[str, typer.Argument(metavar="TYPE", help="Task type, e.g. email.send.")],
    payload: Annotated[
        str | None, typer.Option(help="The task's input, a JSON document (default: {}).")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            help="Idempotency key; default: a fresh UUID, printed so a retry can reuse it."
        ),
    ] = None,
    max_attempts: Annotated[
        int | None,
        typer.Option(min=1, max=MAX_ATTEMPTS_LIMIT, help="Default: the server's."),
    ] = None,
    not_before: Annotated[
        str | None,
        typer.Option(
            help="Delay it until this time, ISO 8601 with a zone (2026-12-24T09:00:00+01:00)."
        ),
    ] = None,
    start_by: Annotated[
        str | None,
        typer.Option(help="Its deadline to start, ISO 8601 with a zone; else it ends EXPIRED."),
    ] = None,
    lane: Annotated[
        str,
        typer.Option(help=f"Its priority lane: {', '.join(LANES)}."),
    ] = DEFAULT_LANE,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the task until it finishes.")
    ] = False,
    wait_timeout: Annotated[
        float | None,
        typer.Option(min=0.001, help="With --wait: give up after this many seconds."),
    ] = None,
    timeout: Timeout = DEFAULT_TIMEOUT_SECONDS,
    as_json: AsJson = False,
) -> None:
    """Submit a task. Submitting again with the same --key returns the original task."""
    _require(TASK_TYPE_RE, task_type, "'TYPE'")
    due, deadline = _moment(not_before, "'--not-before'"), _moment(start_by, "'--start-by'")
    body = _payload_bytes(payload)
    if key is None:
        key = str(uuid.uuid4())
        _stderr().print(f"idempotency key: {key} (retry safely with --key {key})", markup=False)
    else:
        _require(IDEMPOTENCY_KEY_RE, key, "'--key'")
    console = _stdout()
    with _reported_errors(), _client(timeout) as client:
        response = client.submit(
            task_type,
            body,
            idempotency_key=key,
            max_attempts=max_attempts,
            not_before=due,
            start_by=deadline,
            lane=lane,
        )
        task = response.task
        if not as_json:
            title = "Submitted" if response.created else "Already submitted with this key"
            console.print(out.task_table(task, title=title))
        if wait:
            show = None if as_json else lambda t: console.print(out.state_change(t))
            task = client.wait(task.task_id, timeout=wait_timeout, on_change=show)
    if as_json:
        typer.echo(out.to_json({"created": response.created, "task": out.task_dict(task)}))
    if wait:
        _exit_for(task)


@app.command()
def get(
    task_id: TaskId, timeout: Timeout = DEFAULT_TIMEOUT_SECONDS, as_json: AsJson = False
) -> None:
    """Show a task and its event history."""
    _require(TASK_ID_RE, task_id, "'TASK_ID'")
    with _reported_errors(), _client(timeout) as client:
        task, events = client.get(task_id)
    if as_json:
        typer.echo(
            out.to_json(
                {"task": out.task_dict(task), "events": [out.event_dict(e) for e in events]}
            )
        )
        return
    console = _stdout()
    console.print(out.task_table(task))
    console.print(out.events_table(events))


@app.command("list")
def list_tasks(
    state: Annotated[
        TaskState | None, typer.Option(case_sensitive=False, help="Only tasks in this state.")
    ] = None,
    task_type: Annotated[
        str | None, typer.Option("--type", help="Only tasks of this type.")
    ] = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many; 0 = all.")] = 50,
    timeout: IdleTimeout = DEFAULT_IDLE_SECONDS,
    as_json: AsJson = False,
) -> None:
    """List your tasks, newest first (with --json: with payloads and results, as get)."""
    if task_type is not None:
        _require(TASK_TYPE_RE, task_type, "'--type'")
    with _reported_errors(), _client(timeout) as client:
        tasks = list(
            client.list(
                state=pb.TaskState.Value(out.proto_state(state.value))
                if state
                else pb.TASK_STATE_UNSPECIFIED,
                task_type=task_type,
                limit=limit,
                include_payload=as_json,
            )
        )
    if as_json:
        typer.echo(out.to_json([out.task_dict(t) for t in tasks]))
    else:
        _stdout().print(out.tasks_table(tasks))


@app.command()
def cancel(
    task_id: TaskId,
    reason: Annotated[str, typer.Option(help=f"At most {MAX_REASON_CHARS} characters.")] = "",
    timeout: Timeout = DEFAULT_TIMEOUT_SECONDS,
) -> None:
    """Cancel a task that has not finished. Cancelling a cancelled task changes nothing."""
    _require(TASK_ID_RE, task_id, "'TASK_ID'")
    if len(reason) > MAX_REASON_CHARS:
        raise typer.BadParameter(
            f"{len(reason)} characters; the limit is {MAX_REASON_CHARS}", param_hint="'--reason'"
        )
    with _reported_errors(), _client(timeout) as client:
        task = client.cancel(task_id, reason)
    _stdout().print(out.task_table(task))


@app.command()
def watch(
    task_id: TaskId,
    timeout: Annotated[
        float | None,
        typer.Option(min=0.001, help="Give up after this many seconds; default: wait."),
    ] = None,
) -> None:
    """Print each state change of a task until it finishes."""
    _require(TASK_ID_RE, task_id, "'TASK_ID'")
    console = _stdout()
    with _reported_errors(), _client() as client:
        task = client.wait(
            task_id, timeout=timeout, on_change=lambda t: console.print(out.state_change(t))
        )
    _exit_for(task)


DlqType = Annotated[str | None, typer.Option("--type", help="Only dead letters of this task type.")]
DlqError = Annotated[
    str | None,
    typer.Option(
        "--error",
        help="Only dead letters whose last error this regular expression finds "
        "(a plain substring works).",
    ),
]


class GroupBy(StrEnum):
    error = "error"
    type = "type"


def _dlq_filter(task_type: str | None, error: str | None) -> DlqFilter:
    if task_type is not None:
        _require(TASK_TYPE_RE, task_type, "'--type'")
    try:
        pattern = None if error is None else re.compile(error)
    except re.error as exc:
        message = f"not a regular expression: {exc}"
        raise typer.BadParameter(message, param_hint="'--error'") from None
    return DlqFilter(task_type, pattern)


@dlq_app.command("inspect")
def dlq_inspect(
    limit: Annotated[
        int, typer.Option(min=1, help="Show at most this many (matching) dead letters.")
    ] = 10,
    task_type: DlqType = None,
    error: DlqError = None,
    group_by: Annotated[
        GroupBy | None,
        typer.Option("--group-by", help="Count the dead letters per last error or per type."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Show dead-lettered tasks without removing them from the DLQ."""
    from conveyor import ops

    where = _dlq_filter(task_type, error)
    with _reported_errors():
        listing = ops.dlq_inspect(ops.from_env(), limit, where=where)
    if group_by is not None:
        groups = out.dlq_groups(listing.entries, group_by.value)
        if as_json:
            typer.echo(out.to_json(groups))
        else:
            _stdout().print(out.dlq_groups_table(groups, group_by.value))
    elif as_json:
        typer.echo(out.to_json([out.dlq_dict(e) for e in listing.entries]))
    else:
        _stdout().print(out.dlq_table(listing.entries))
    if listing.held_elsewhere:
        _stderr().print(
            f"{listing.held_elsewhere} DLQ message(s) are held by another reader (the relay's"
            " DLQ scan, or an inspect or redrive that died) and not listed; run again",
            markup=False,
            soft_wrap=True,
        )


@dlq_app.command("redrive")
def dlq_redrive(
    task_ids: Annotated[
        list[str] | None,
        typer.Option("--task-id", help="Only this task (repeatable); default: any."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Without --task-id: at most this many.")] = 10,
    task_type: DlqType = None,
    error: DlqError = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: AsJson = False,
) -> None:
    """Send dead-lettered tasks back to the main queue for another round of attempts."""
    for task_id in task_ids or ():
        _require(TASK_ID_RE, task_id, "'--task-id'")
    where = _dlq_filter(task_type, error)
    if not yes and not _interactive():
        _fail(
            "refusing to redrive without confirmation: no terminal to ask on; pass --yes",
            EXIT_USAGE,
        )
    from conveyor import ops

    with _reported_errors():
        operator = ops.from_env()
        if not yes:
            which = f"{', '.join(task_ids)}" if task_ids else f"up to {limit} task(s)"
            typer.confirm(f"Redrive {which}{out.filter_phrase(where)} from the DLQ?", abort=True)
        results = ops.dlq_redrive(operator, task_ids or None, limit, where=where)
    if as_json:
        typer.echo(out.to_json([out.redrive_dict(r) for r in results]))
    else:
        _stdout().print(out.redrive_table(results))


@outbox_app.command("status")
def outbox_status() -> None:
    """How many tasks wait for the relay, and for how long the oldest has waited."""
    from conveyor import ops

    with _reported_errors():
        status = ops.outbox_status(ops.from_env())
    _stdout().print(out.outbox_table(status))


@queue_app.command("stats")
def queue_stats() -> None:
    """Approximate message counts of every lane's queue and DLQ."""
    from conveyor import ops

    with _reported_errors():
        stats = ops.queue_stats(ops.from_env())
    _stdout().print(out.queue_table(stats))


ScheduleName = Annotated[str, typer.Argument(metavar="NAME", help="The schedule's name.")]


def _print_schedules(schedules: Sequence[pb.Schedule], as_json: bool) -> None:
    if as_json:
        rows = [json_format.MessageToDict(s, preserving_proto_field_name=True) for s in schedules]
        typer.echo(json.dumps(rows, indent=2))
        return
    _stdout().print(out.schedule_table(schedules))


@schedule_app.command("create")
def schedule_create(
    name: ScheduleName,
    cron: Annotated[
        str,
        typer.Option(help="Five fields: minute hour day month weekday (a sixth, seconds, last)."),
    ],
    task_type: Annotated[str, typer.Option("--type", help="A declared task type.")],
    time_zone: Annotated[str, typer.Option("--tz", help="IANA time zone of the spec.")] = "UTC",
    payload: Annotated[str | None, typer.Option(help="The tasks' payload, JSON.")] = None,
    max_attempts: Annotated[int, typer.Option(min=0, max=MAX_ATTEMPTS_LIMIT)] = 0,
    as_json: AsJson = False,
    timeout: Timeout = DEFAULT_TIMEOUT_SECONDS,
) -> None:
    """Submit a task of TYPE at each slot of CRON in the time zone. Creating the same
    definition again changes nothing; another under the same name is refused."""
    _require(TASK_TYPE_RE, task_type, "'--type'")
    with _reported_errors(), _client(timeout) as client:
        schedule, _ = client.create_schedule(
            name, cron, time_zone, task_type, _payload_bytes(payload), max_attempts=max_attempts
        )
    _print_schedules([schedule], as_json)


@schedule_app.command("list")
def schedule_list(as_json: AsJson = False, timeout: Timeout = DEFAULT_TIMEOUT_SECONDS) -> None:
    """Your schedules, by name, with their next slot."""
    with _reported_errors(), _client(timeout) as client:
        schedules = client.list_schedules()
    _print_schedules(schedules, as_json)


@schedule_app.command("pause")
def schedule_pause(name: ScheduleName, timeout: Timeout = DEFAULT_TIMEOUT_SECONDS) -> None:
    """Stop firing until resumed (the slots meanwhile are skipped)."""
    with _reported_errors(), _client(timeout) as client:
        schedule = client.pause_schedule(name, True)
    _print_schedules([schedule], False)


@schedule_app.command("resume")
def schedule_resume(name: ScheduleName, timeout: Timeout = DEFAULT_TIMEOUT_SECONDS) -> None:
    """Fire again, from the next slot after now."""
    with _reported_errors(), _client(timeout) as client:
        schedule = client.pause_schedule(name, False)
    _print_schedules([schedule], False)


@schedule_app.command("delete")
def schedule_delete(name: ScheduleName, timeout: Timeout = DEFAULT_TIMEOUT_SECONDS) -> None:
    """Delete the schedule (its tasks already submitted stay). A missing one is no error."""
    with _reported_errors(), _client(timeout) as client:
        deleted = client.delete_schedule(name)
    typer.echo(f"schedule {name} {'deleted' if deleted else 'was not there'}")


def main() -> None:
    from conveyor.telemetry.logs import configure_logging

    # JSON lines on stderr, as the services log: what an operator command did (a redrive's
    # "task redriven from the DLQ", with the task's trace id) is on record.
    configure_logging("conveyor-cli")
    app()


if __name__ == "__main__":
    main()
