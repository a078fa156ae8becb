"""Schedule RPCs over gRPC with mTLS: create, list, pause/resume and delete, each tenant seeing
only its own; a bad definition refused INVALID_ARGUMENT naming the field, with nothing stored."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest
from conveyor.schema import schedules_pk
from conveyor.v1 import task_service_pb2 as pb
from support import cli

pytestmark = pytest.mark.integration


def _schedule(name: str, **overrides: object) -> pb.Schedule:
    fields: dict[str, object] = {
        "name": name,
        "cron": "0 3 * * *",
        "time_zone": "Europe/Paris",
        "task_type": "demo.sleep",
        "payload": json.dumps({"seconds": 0.01}).encode(),
        **overrides,
    }
    return pb.Schedule(**fields)


def _stored_schedules(system) -> list[str]:
    ddb = system.backend.client("dynamodb")
    names = []
    for page in ddb.get_paginator("scan").paginate(
        TableName=system.table_name, ConsistentRead=True
    ):
        names += [i["sk"]["S"] for i in page["Items"] if i["pk"]["S"].startswith(schedules_pk(""))]
    return names


def _names(stub) -> list[str]:
    return [s.name for s in stub.ListSchedules(pb.ListSchedulesRequest(), timeout=10).schedules]


def test_create_list_pause_resume_and_delete(acme, globex):
    name = f"nightly-{uuid.uuid4().hex[:8]}"
    created = acme.CreateSchedule(pb.CreateScheduleRequest(schedule=_schedule(name)), timeout=10)
    assert created.created
    assert created.schedule.next_slot.ToDatetime().minute == 0
    again = acme.CreateSchedule(pb.CreateScheduleRequest(schedule=_schedule(name)), timeout=10)
    assert not again.created  # the same definition: answered, not doubled
    with pytest.raises(grpc.RpcError) as other:
        acme.CreateSchedule(
            pb.CreateScheduleRequest(schedule=_schedule(name, cron="0 4 * * *")), timeout=10
        )
    assert other.value.code() == grpc.StatusCode.ALREADY_EXISTS

    assert name in _names(acme)
    assert name not in _names(globex)  # another tenant's schedules are not listed

    paused = acme.PauseSchedule(pb.PauseScheduleRequest(name=name, paused=True), timeout=10)
    assert paused.schedule.paused
    resumed = acme.PauseSchedule(pb.PauseScheduleRequest(name=name, paused=False), timeout=10)
    assert not resumed.schedule.paused
    with pytest.raises(grpc.RpcError) as missing:
        globex.PauseSchedule(pb.PauseScheduleRequest(name=name, paused=True), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    assert acme.DeleteSchedule(pb.DeleteScheduleRequest(name=name), timeout=10).deleted
    assert not acme.DeleteSchedule(pb.DeleteScheduleRequest(name=name), timeout=10).deleted
    assert name not in _names(acme)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cron": "0 25 * * *"}, "schedule.cron"),
        ({"time_zone": "Europe/Atlantis"}, "schedule.time_zone"),
        ({"task_type": "no.such.type"}, "schedule.task_type"),
        ({"payload": b'{"seconds": "soon"}'}, "schedule.payload"),
        ({"name": "Bad Name"}, "schedule.name"),
    ],
)
def test_a_bad_schedule_is_refused_naming_its_field_and_stores_nothing(
    system, acme, overrides, field
):
    definition = {"name": f"bad-{uuid.uuid4().hex[:8]}", **overrides}
    name = str(definition.pop("name"))
    request = pb.CreateScheduleRequest(schedule=_schedule(name, **definition))
    with pytest.raises(grpc.RpcError) as refused:
        acme.CreateSchedule(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith(field)
    assert name not in _stored_schedules(system)


def test_the_cli_creates_lists_pauses_resumes_and_deletes(system):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    create = ("schedule", "create", name, "--cron", "30 2 * * *", "--tz", "America/New_York")
    made = cli(system, "acme", *create, "--type", "demo.sleep", "--payload", "{}", "--json")
    assert made.returncode == 0, made.stderr
    [shown] = json.loads(made.stdout)
    assert (shown["name"], shown["time_zone"]) == (name, "America/New_York")

    listed = cli(system, "acme", "schedule", "list", "--json")
    assert name in [s["name"] for s in json.loads(listed.stdout)]
    assert cli(system, "acme", "schedule", "pause", name).returncode == 0
    [paused] = [
        s
        for s in json.loads(cli(system, "acme", "schedule", "list", "--json").stdout)
        if s["name"] == name
    ]
    assert paused["paused"] is True
    assert cli(system, "acme", "schedule", "resume", name).returncode == 0
    deleted = cli(system, "acme", "schedule", "delete", name)
    assert deleted.returncode == 0 and "deleted" in deleted.stdout

    bad = cli(system, "acme", "schedule", "create", "x", "--cron", "* *", "--type", "demo.sleep")
    assert bad.returncode == 1
    assert "INVALID_ARGUMENT" in bad.stderr and "schedule.cron" in bad.stderr


def test_the_readme_example_runs_as_written(system):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    match = re.search(r"<!-- schedule-example -->\n```sh\n(.*?)```", readme, re.S)
    assert match, "README lost its schedule example"
    env = system.cli_env("acme")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({"COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"})
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", match.group(1)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert "nightly-report" in ran.stdout and "schedule nightly-report deleted" in ran.stdout


def test_a_tenant_at_its_schedule_quota_is_refused_resource_exhausted_and_nothing_stored(
    system, acme, globex
):
    """The relay's scheduled submits pass the API's submit rate: the number of schedules is
    what bounds a tenant's firing rate. At the quota a new name is refused, stored nowhere; the
    same definition again is still answered, and another tenant is not affected."""
    from conveyor.api.schedule_rpcs import MAX_SCHEDULES_PER_TENANT

    prefix = f"quota-{uuid.uuid4().hex[:6]}-"
    ours = [f"{prefix}{i}" for i in range(MAX_SCHEDULES_PER_TENANT - len(_names(acme)))]
    try:
        for name in ours:
            acme.CreateSchedule(pb.CreateScheduleRequest(schedule=_schedule(name)), timeout=10)
        over = f"{prefix}over"
        with pytest.raises(grpc.RpcError) as refused:
            acme.CreateSchedule(pb.CreateScheduleRequest(schedule=_schedule(over)), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"quota of {MAX_SCHEDULES_PER_TENANT}" in refused.value.details()
        assert dict(refused.value.trailing_metadata())["retry-after"] == "60"
        assert over not in _stored_schedules(system)
        replay = pb.CreateScheduleRequest(schedule=_schedule(ours[0]))
        assert not acme.CreateSchedule(replay, timeout=10).created
        elsewhere = f"{prefix}globex"
        assert globex.CreateSchedule(
            pb.CreateScheduleRequest(schedule=_schedule(elsewhere)), timeout=10
        ).created
        globex.DeleteSchedule(pb.DeleteScheduleRequest(name=elsewhere), timeout=10)
    finally:
        for name in ours:
            acme.DeleteSchedule(pb.DeleteScheduleRequest(name=name), timeout=10)
