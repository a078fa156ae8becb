"""How the `conveyor` command shows things: rich tables for people, plain JSON for scripts.

Every value that comes from the server or AWS is wrapped in `Text`, never parsed as rich markup,
so a task type or an error message containing `[brackets]` is printed as it is.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from rich.table import Table
from rich.text import Text

from conveyor.api.convert import TERMINAL_STATES
from conveyor.v1 import task_service_pb2 as pb

_STATE_PREFIX = "TASK_STATE_"
_STATE_STYLE = {
    "SUCCEEDED": "green",
    "FAILED": "red",
    "DEAD": "bold red",
    "CANCELLED": "yellow",
    "EXPIRED": "yellow",
    "RUNNING": "cyan",
}
_CELL_LIMIT = 80


def state_name(state: int) -> str:
    """`TASK_STATE_QUEUED` -> `QUEUED`; empty for UNSPECIFIED (e.g. a first event's origin)."""
    if state == pb.TASK_STATE_UNSPECIFIED:
        return ""
    return pb.TaskState.Name(state).removeprefix(_STATE_PREFIX)


def proto_state(name: str) -> str:
    """`QUEUED` -> `TASK_STATE_QUEUED`, which proto message constructors accept."""
    return _STATE_PREFIX + name


def is_terminal(task: pb.Task) -> bool:
    return task.state in TERMINAL_STATES


def _iso(ts: Timestamp) -> str | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _bytes_json(data: bytes) -> dict[str, Any]:
    """A JSON document stays a document; anything else is carried as base64."""
    if not data:
        return {}
    try:
        return {"json": json.loads(data)}
    except ValueError:
        return {"base64": base64.b64encode(data).decode()}


def task_dict(task: pb.Task) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "task_type": task.task_type,
        "state": state_name(task.state),
        "attempts": task.attempts,
        "max_attempts": task.max_attempts,
        "last_error": task.last_error,
        "payload": _bytes_json(task.payload),
        "result": _bytes_json(task.result),
        "version": task.version,
        "idempotency_key": task.idempotency_key,
        "trace_id": task.trace_id,
        "created_at": _iso(task.created_at),
        "updated_at": _iso(task.updated_at),
        "not_before": _iso(task.not_before),
        "start_by": _iso(task.start_by),
        "lane": task.lane,
    }


def event_dict(event: pb.TaskEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "from_state": state_name(event.from_state) or None,
        "to_state": state_name(event.to_state),
        "at": _iso(event.at),
        "attempt": event.attempt,
        "detail": event.detail,
    }


def to_json(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False)


def _state_text(state: int) -> Text:
    name = state_name(state)
    return Text(name, style=_STATE_STYLE.get(name, ""))


def _when(ts: Timestamp) -> str:
    iso = _iso(ts)
    return "" if iso is None else iso.replace("T", " ").removesuffix("Z")


def _bytes_text(data: bytes) -> Text:
    if not data:
        return Text("")
    try:
        return Text(json.dumps(json.loads(data), ensure_ascii=False))
    except ValueError:
        return Text(f"<{len(data)} bytes, not JSON>", style="dim")


def _clip(text: str) -> Text:
    return Text(text if len(text) <= _CELL_LIMIT else text[: _CELL_LIMIT - 1] + "…")


def task_table(task: pb.Task, *, title: str = "Task") -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows: list[tuple[str, Text]] = [
        ("task id", Text(task.task_id)),
        ("type", Text(task.task_type)),
        ("state", _state_text(task.state)),
        ("lane", Text(task.lane)),
        ("attempts", Text(f"{task.attempts} of {task.max_attempts}")),
        ("last error", Text(task.last_error)),
        ("payload", _bytes_text(task.payload)),
        ("result", _bytes_text(task.result)),
        ("idempotency key", Text(task.idempotency_key)),
        ("trace id", Text(task.trace_id)),
        ("created", Text(_when(task.created_at))),
        ("updated", Text(_when(task.updated_at))),
        ("version", Text(str(task.version))),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


# Columns holding ids are never shortened, whatever the terminal's width: an id is for pasting
# into the next command. The other columns wrap instead.
_ID_COLUMNS = frozenset({"task id", "task ids", "message id"})


def _table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        if column in _ID_COLUMNS:
            table.add_column(column, no_wrap=True, overflow="ignore", min_width=len(column))
        else:
            table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def events_table(events: Iterable[pb.TaskEvent]) -> Table:
    return _table(
        "History",
        ("#", "at (UTC)", "from", "to", "attempt", "detail"),
        (
            (
                str(e.seq),
                _when(e.at),
                _state_text(e.from_state),
                _state_text(e.to_state),
                str(e.attempt),
                Text(e.detail),
            )
            for e in events
        ),
    )


def tasks_table(tasks: Iterable[pb.Task]) -> Table:
    return _table(
        None,
        ("task id", "type", "state", "attempts", "updated (UTC)", "last error"),
        (
            (
                Text(t.task_id),
                Text(t.task_type),
                _state_text(t.state),
                f"{t.attempts}/{t.max_attempts}",
                _when(t.updated_at),
                _clip(t.last_error),
            )
            for t in tasks
        ),
    )


def state_change(task: pb.Task) -> Text:
    """One line per observed state, for `watch` and `submit --wait`."""
    line = Text(f"{_when(task.updated_at)}  ")
    state = _state_text(task.state)
    state.pad_right(len("CANCELLED") - len(state))  # the longest state name: columns line up
    line.append_text(state)
    line.append(f"  attempt {task.attempts}/{task.max_attempts}")
    if task.last_error:
        line.append(f"  {task.last_error}", style="dim")
    return line


def dlq_table(entries: Iterable[Any]) -> Table:
    """Rows of ops.DlqEntry. The SQS message id is left to `--json`: beside the whole task id
    it left the other columns no room at 80 columns."""
    return _table(
        "Dead-letter queue",
        ("task id", "type", "lane", "state", "attempts", "last error"),
        (
            (
                Text(e.task_id),
                Text(e.task_type),
                Text(e.lane),
                Text(e.state),
                str(e.attempts),
                _clip(e.last_error),
            )
            for e in entries
        ),
    )


def dlq_dict(entry: Any) -> dict[str, Any]:
    """An ops.DlqEntry."""
    return dataclasses.asdict(entry)


def dlq_groups(entries: Iterable[Any], key: str) -> list[dict[str, Any]]:
    """ops.DlqEntry rows counted per `key` ("error": the last error, "type": the task type),
    largest group first, each with its task ids, so one command goes from the alert to the
    causes and from a cause to the tasks to redrive."""
    field = {"error": "last_error", "type": "task_type"}[key]
    groups: dict[str, list[str]] = {}
    for entry in entries:
        groups.setdefault(getattr(entry, field), []).append(entry.task_id)
    ranked = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    return [{key: value, "count": len(ids), "task_ids": ids} for value, ids in ranked]


def dlq_groups_table(groups: Iterable[Mapping[str, Any]], key: str) -> Table:
    return _table(
        f"Dead-letter queue by {key}",
        ("count", key, "task ids"),
        ((str(g["count"]), Text(g[key]), Text("\n".join(g["task_ids"]))) for g in groups),
    )


def filter_phrase(where: Any) -> str:
    """` of type T whose last error matches /E/` for a confirmation question (a DlqFilter)."""
    phrase = ""
    if where.task_type is not None:
        phrase += f" of type {where.task_type}"
    if where.error is not None:
        phrase += f" whose last error matches /{where.error.pattern}/"
    return phrase


def redrive_dict(result: Any) -> dict[str, Any]:
    """An ops.RedriveResult."""
    return dataclasses.asdict(result)


def redrive_table(results: Iterable[Any]) -> Table:
    """Rows of ops.RedriveResult."""
    return _table(
        "Redrive",
        ("task id", "outcome", "detail"),
        ((Text(r.task_id), Text(r.outcome), Text(r.detail)) for r in results),
    )


def outbox_table(status: Any) -> Table:
    """An ops.OutboxStatus."""
    table = Table(title="Outbox", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    age = status.oldest_age_seconds
    table.add_row("pending marks", str(status.pending))
    table.add_row("oldest age", "-" if age is None else f"{age:.1f} s")
    return table


def queue_table(stats: Mapping[str, Mapping[str, int]]) -> Table:
    table = Table(title="Queues (approximate counts)", title_justify="left")
    table.add_column("queue")
    for column in ("visible", "inflight", "delayed"):
        table.add_column(column, justify="right")
    for queue, counts in stats.items():
        table.add_row(
            Text(queue), *(str(counts.get(c, 0)) for c in ("visible", "inflight", "delayed"))
        )
    return table


def schedule_table(schedules: Sequence[pb.Schedule]) -> Table:
    table = Table(title="Schedules", title_justify="left")
    for column in ("name", "cron", "time zone", "type", "state", "next slot (UTC)"):
        table.add_column(column, overflow="fold")
    for s in schedules:
        table.add_row(
            s.name,
            s.cron,
            s.time_zone,
            s.task_type,
            "paused" if s.paused else "active",
            "-" if s.paused else s.next_slot.ToDatetime().isoformat(),
        )
    return table
