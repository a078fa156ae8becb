"""Priority lanes (README "Priority lanes"): chosen at submit, validated, stored with the task,
shown by GetTask, ListTasks and the CLI; idempotent replays keep the original lane."""

from __future__ import annotations

import json
import re
import uuid

import grpc
import pytest
from conveyor.domain import DEFAULT_LANE, LANES
from conveyor.v1 import task_service_pb2 as pb
from support import cli, get, rpc_code, submit, wait_terminal

pytestmark = pytest.mark.integration


def _request(key: str, lane: str = "", seconds: float = 0.01) -> pb.SubmitTaskRequest:
    return pb.SubmitTaskRequest(
        task_type="demo.sleep",
        payload=json.dumps({"seconds": seconds}).encode(),
        idempotency_key=key,
        lane=lane,
    )


def test_each_lane_is_kept_and_shown_and_no_lane_is_the_default(acme):
    made = {lane: submit(acme, "demo.sleep", {"seconds": 0.01}, lane=lane).task for lane in LANES}
    unnamed = submit(acme, "demo.sleep", {"seconds": 0.01}).task
    assert {lane: t.lane for lane, t in made.items()} == {lane: lane for lane in LANES}
    assert unnamed.lane == DEFAULT_LANE
    for lane, task in made.items():
        assert wait_terminal(acme, task.task_id).state == pb.TASK_STATE_SUCCEEDED
        assert get(acme, task.task_id).task.lane == lane
    ids = {t.task_id: lane for lane, t in made.items()}
    listed = {
        t.task_id: t.lane
        for t in acme.ListTasks(pb.ListTasksRequest(task_type="demo.sleep"), timeout=30)
        if t.task_id in ids
    }
    assert listed == ids


def test_an_unknown_lane_is_refused_and_nothing_is_stored(acme):
    key = uuid.uuid4().hex
    with pytest.raises(grpc.RpcError) as err:
        acme.SubmitTask(_request(key, lane="urgent"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lane" in err.value.details()
    # Nothing was stored under the key: the same key with a valid lane creates the task.
    assert acme.SubmitTask(_request(key, lane="high"), timeout=10).created

    batch = acme.SubmitTasks(
        pb.SubmitTasksRequest(
            tasks=[_request(uuid.uuid4().hex, "nope"), _request(uuid.uuid4().hex)]
        ),
        timeout=10,
    )
    refused, created = batch.results
    assert refused.outcome == pb.SUBMIT_OUTCOME_REFUSED
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert refused.message.startswith("tasks[0].lane")
    assert created.outcome == pb.SUBMIT_OUTCOME_CREATED


def test_a_replay_keeps_its_lane_and_one_asking_another_lane_is_a_conflict(acme):
    key = uuid.uuid4().hex
    first = acme.SubmitTask(_request(key, lane="high"), timeout=10)
    again = acme.SubmitTask(_request(key, lane="high"), timeout=10)
    assert first.created and not again.created
    assert (again.task.task_id, again.task.lane) == (first.task.task_id, "high")
    assert rpc_code(lambda: acme.SubmitTask(_request(key), timeout=10)) == (
        grpc.StatusCode.ALREADY_EXISTS
    )
    # An empty lane and "default" are the same request.
    plain = uuid.uuid4().hex
    made = acme.SubmitTask(_request(plain), timeout=10)
    named = acme.SubmitTask(_request(plain, lane=DEFAULT_LANE), timeout=10)
    assert not named.created and named.task.task_id == made.task.task_id
    batch = acme.SubmitTasks(pb.SubmitTasksRequest(tasks=[_request(plain, "high")]), timeout=10)
    assert batch.results[0].code == grpc.StatusCode.ALREADY_EXISTS.value[0]


def test_the_cli_submits_to_a_lane_and_shows_it(system):
    done = cli(
        system,
        "acme",
        "submit",
        "demo.sleep",
        "--payload",
        '{"seconds": 0.01}',
        "--lane",
        "high",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout)["task"]
    assert task["lane"] == "high"
    shown = cli(system, "acme", "get", task["task_id"])
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"\blane\W+high\b", shown.stdout), shown.stdout
    bad = cli(system, "acme", "submit", "demo.sleep", "--payload", "{}", "--lane", "urgent")
    assert bad.returncode != 0
    assert "lane" in bad.stderr + bad.stdout
