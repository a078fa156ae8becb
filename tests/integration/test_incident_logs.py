"""What the logs say in an incident, read from the real processes' log files: a dead letter at
ERROR with its error, an UNAVAILABLE answer with its cause, and a redrive that says what it did
and keeps the task on its original trace."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import grpc
import pytest
from conveyor import ops
from conveyor.telemetry.logs import TraceContextFilter
from conveyor.v1 import task_service_pb2 as pb
from conveyor_dev.emulators.backend import start_backend
from conveyor_dev.local.system import LocalSystem
from support import FAST_RECOVERY, TENANTS, cli, get, submit, wait_for, wait_state

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    """API and one worker; the API's DynamoDB reads fail with HTTP 500 while `outage` exists."""
    workdir = tmp_path_factory.mktemp("incident")
    with start_backend() as backend:
        system = LocalSystem.provision(workdir, backend, TENANTS, stack="dev", tuning=FAST_RECOVERY)
        outage = workdir / "outage"
        system.spawn("api", "api", {"CONVEYOR_AWS_FAULTS": f"dynamodb.*=error while={outage}"})
        system.spawn("worker-1", "worker")
        try:
            system.wait_ready()
            yield system
        finally:
            system.stop()


def _lines(system: LocalSystem, name: str) -> list[dict]:
    text = system.procs[name].log_path.read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _lines_of_task(system: LocalSystem, task_id: str) -> list[dict]:
    return [line for line in _lines(system, "worker-1") if line.get("task_id") == task_id]


def test_a_dead_letter_is_logged_at_error_with_its_error(system: LocalSystem):
    with system.channel("acme") as channel:
        task_id = submit(system.stub(channel), "demo.poison", max_attempts=2).task.task_id
        wait_state(system.stub(channel), task_id, {pb.TASK_STATE_DEAD})

    [dead] = wait_for(
        lambda: [line for line in _lines_of_task(system, task_id) if line["level"] == "ERROR"],
        30,
        "the dead letter's log line",
    )
    assert dead["message"].startswith("task dead: RuntimeError: ")
    assert "poison" in dead["message"]
    assert (dead["task_type"], dead["attempts"]) == ("demo.poison", 2)


def test_an_unavailable_answer_is_logged_with_its_cause(system: LocalSystem):
    outage = system.workdir / "outage"
    with system.channel("acme") as channel:
        task_id = submit(system.stub(channel), "demo.sleep", {"seconds": 0}).task.task_id
        outage.touch()
        try:
            with pytest.raises(grpc.RpcError) as err:
                get(system.stub(channel), task_id)
        finally:
            outage.unlink()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    def logged() -> list[dict]:
        return [line for line in _lines(system, "api") if line.get("grpc_code") == "UNAVAILABLE"]

    line = wait_for(logged, 30, "the UNAVAILABLE answer's log line")[0]
    assert line["level"] == "ERROR"
    assert line["cause"].startswith("InternalServerError: ")
    assert "when calling the Query operation" in line["cause"]
    assert err.value.details() in line["message"]


def test_a_redrive_logs_what_it_did_and_keeps_the_task_on_its_trace(
    system: LocalSystem, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    with system.channel("acme") as channel:
        stub = system.stub(channel)
        task_id = submit(stub, "demo.poison", max_attempts=1).task.task_id
        wait_state(stub, task_id, {pb.TASK_STATE_DEAD})
    first = wait_for(
        lambda: [line for line in _lines_of_task(system, task_id) if line["level"] == "ERROR"],
        30,
        "the first dead letter",
    )
    trace_id = first[0]["trace_id"]
    assert len(trace_id) == 32

    for name, value in system.env().items():
        monkeypatch.setenv(name, value)
    caplog.handler.addFilter(TraceContextFilter("test"))
    with caplog.at_level(logging.INFO, logger="conveyor.tasks"):
        results = ops.dlq_redrive(ops.from_env(), [task_id], limit=10)
    assert [(r.task_id, r.outcome) for r in results] == [(task_id, "redriven")]

    [record] = [r for r in caplog.records if getattr(r, "task_id", None) == task_id]
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith("task redriven from the DLQ")
    assert (record.task_type, record.attempts) == ("demo.poison", 1)  # type: ignore[attr-defined]
    assert "poison" in record.last_error  # type: ignore[attr-defined]
    assert record.trace_id == trace_id  # type: ignore[attr-defined]

    # The redriven task dies again (it is poison): its new attempt is on the same trace.
    def died_twice() -> list[dict]:
        lines = _lines_of_task(system, task_id)
        dead = [line for line in lines if line["level"] == "ERROR"]
        return dead if len(dead) == 2 else []

    assert {line["trace_id"] for line in wait_for(died_twice, 60, "the second death")} == {trace_id}


def test_the_cli_logs_each_redrive_on_stderr(system: LocalSystem):
    with system.channel("acme") as channel:
        stub = system.stub(channel)
        task_id = submit(stub, "demo.poison", max_attempts=1).task.task_id
        wait_state(stub, task_id, {pb.TASK_STATE_DEAD})
    done = cli(system, "acme", "dlq", "redrive", "--task-id", task_id, "--yes")
    assert done.returncode == 0, done.stderr
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    [line] = [line for line in logged if line.get("task_id") == task_id]
    assert line["message"].startswith("task redriven from the DLQ")
    assert (line["service"], line["level"]) == ("conveyor-cli", "INFO")
    assert len(line["trace_id"]) == 32
