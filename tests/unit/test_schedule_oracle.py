"""The soak's schedule verdict (conveyor_dev.local.schedule_oracle.judge) from sink lines as the
oracle's handler writes them: it must fail on a skipped calm slot, a task run before its slot
and a chaos slot skipped under an SQS-only fault, and pass a schedule that fired every slot."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from conveyor_dev.local import oracle, schedule_oracle

P = schedule_oracle.PERIOD_SECONDS
T0 = 1_800_000_000.0 - 1_800_000_000.0 % P  # a slot
CREATED, CALM_FROM, DELETED = T0 - 1, T0 + 10 * P - 1, T0 + 16 * P - 1
SLOTS = [T0 + i * P for i in range(16)]  # 10 of the chaos, 5 calm, 1 in the delete's period


def _seen(tmp_path, fired: dict[float, float]) -> oracle.Observed:
    """The sink after each slot in `fired` ran, at the time given, and applied its effect."""
    sink = tmp_path / "sink.jsonl"
    with sink.open("w") as out:
        for slot, ran_at in fired.items():
            key = schedule_oracle.KEY_PREFIX + datetime.fromtimestamp(slot, UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
            for kind in ("execution", "effect"):
                line = {"kind": kind, "task_id": f"t{slot}", "at": ran_at, "task_key": key}
                out.write(json.dumps({**line, "key": f"{key}/effect"}) + "\n")
    return oracle.read(sink)


def _judge(seen, kills=(), dynamodb=()):
    return schedule_oracle.judge(seen, CREATED, CALM_FROM, DELETED, list(kills), list(dynamodb))


def test_every_slot_fired_once_after_its_time_passes(tmp_path):
    report = _judge(_seen(tmp_path, {s: s + 0.5 for s in SLOTS}))
    assert (report.slots, report.fired_once, report.calm_slots, report.calm_fired_once) == (
        15,
        15,
        5,
        5,
    )
    assert not report.failed


def test_a_skipped_calm_slot_fails_even_after_a_relay_kill(tmp_path):
    fired = {s: s + 0.5 for s in SLOTS if s != SLOTS[12]}
    report = _judge(_seen(tmp_path, fired), kills=[SLOTS[12] - 1])
    assert report.missed == 1 and report.failed


def test_a_chaos_slot_is_excused_by_a_relay_kill_or_a_dynamodb_window_only(tmp_path):
    seen = _seen(tmp_path, {s: s + 0.5 for s in SLOTS if s != SLOTS[4]})
    assert not _judge(seen, kills=[SLOTS[4] - 2]).failed
    assert not _judge(seen, dynamodb=[(SLOTS[4] - 1, SLOTS[4] + 1)]).failed
    assert _judge(seen).failed  # nothing in its period (an SQS window is not passed in)


def test_a_task_run_before_its_slot_fails(tmp_path):
    fired = {s: s + 0.5 for s in SLOTS}
    fired[SLOTS[3]] = SLOTS[3] - 0.2
    report = _judge(_seen(tmp_path, fired))
    assert report.early == 1 and report.failed
