"""The task commands over real mTLS gRPC against a small in-memory TaskService.

The stand-in service only echoes and replays canned states: it checks the CLI's side of the
wire (requests it builds, identity it presents, how it shows answers and errors), not the API.
End-to-end tests against the real API live with the API.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from conveyor import cli
from conveyor.api.auth import server_credentials, tenant_of
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc
from typer.testing import CliRunner

FAILING_TYPE = "always.fails"
SLOW_TYPE = "slow.answer"


class FakeTaskService(pb_grpc.TaskServiceServicer):
    def __init__(self) -> None:
        self.requests: list[tuple[str, object]] = []
        self.tasks: dict[str, pb.Task] = {}
        self.by_key: dict[tuple[str, str], str] = {}

    def SubmitTask(self, request, context):
        tenant = tenant_of(context)
        self.requests.append((tenant, request))
        if request.task_type == SLOW_TYPE:
            gone = threading.Event()
            context.add_callback(gone.set)
            gone.wait(30)  # until the client's deadline cancels the call
            context.abort(grpc.StatusCode.INTERNAL, "client should have given up")
        existing = self.by_key.get((tenant, request.idempotency_key))
        if existing:
            return pb.SubmitTaskResponse(task=self.tasks[existing], created=False)
        task = pb.Task(
            task_id=uuid.uuid4().hex,
            task_type=request.task_type,
            payload=request.payload,
            state=pb.TASK_STATE_QUEUED,
            max_attempts=request.max_attempts or 5,
            idempotency_key=request.idempotency_key,
            version=1,
        )
        task.created_at.GetCurrentTime()
        task.updated_at.CopyFrom(task.created_at)
        self.tasks[task.task_id] = task
        self.by_key[(tenant, request.idempotency_key)] = task.task_id
        return pb.SubmitTaskResponse(task=task, created=True)

    def GetTask(self, request, context):
        task = self.tasks.get(request.task_id)
        if task is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"task {request.task_id} not found")
        event = pb.TaskEvent(seq=1, to_state=pb.TASK_STATE_QUEUED, detail="submitted [api]")
        return pb.GetTaskResponse(task=task, events=[event])

    def ListTasks(self, request, context):
        self.requests.append((tenant_of(context), request))
        yield from list(self.tasks.values())[: request.limit or None]

    def CancelTask(self, request, context):
        self.requests.append((tenant_of(context), request))
        task = self.tasks[request.task_id]
        task.state = pb.TASK_STATE_CANCELLED
        return pb.CancelTaskResponse(task=task)

    def WatchTask(self, request, context):
        task = pb.Task()
        task.CopyFrom(self.tasks[request.task_id])
        final = pb.TASK_STATE_FAILED if task.task_type == FAILING_TYPE else pb.TASK_STATE_SUCCEEDED
        for state in (pb.TASK_STATE_QUEUED, pb.TASK_STATE_RUNNING, final):
            task.state = state
            yield task


@pytest.fixture(scope="module")
def service(certs) -> Iterator[tuple[FakeTaskService, int]]:
    fake = FakeTaskService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_TaskServiceServicer_to_server(fake, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(certs.server.settings()))
    server.start()
    yield fake, port
    server.stop(grace=None)


@pytest.fixture
def invoke(certs, service, monkeypatch):
    """Run `conveyor ARGS` as tenant acme against the stand-in service."""
    _, port = service
    for name in list(os.environ):
        if name.startswith("CONVEYOR_"):
            monkeypatch.delenv(name)
    env = {
        "CONVEYOR_API_ADDRESS": f"127.0.0.1:{port}",
        "COLUMNS": "200",
        **certs.client("acme").env(),
    }
    runner = CliRunner()

    def run(*args: str, tls_env: dict[str, str] | None = None):
        return runner.invoke(cli.app, list(args), env={**env, **(tls_env or {})})

    return run


def _submit_json(invoke, *args: str) -> dict:
    result = invoke("submit", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_submit_sends_compact_json_and_a_fresh_key_it_prints(invoke, service):
    fake, _ = service
    result = invoke("submit", "email.send", "--payload", '{ "to": "a@example.com" }', "--json")
    assert result.exit_code == 0, result.output
    tenant, request = fake.requests[-1]
    assert tenant == "acme"
    assert request.payload == b'{"to":"a@example.com"}'
    assert f"idempotency key: {request.idempotency_key}" in result.stderr
    uuid.UUID(request.idempotency_key)
    document = json.loads(result.stdout)
    assert document["created"] is True
    assert document["task"]["payload"] == {"json": {"to": "a@example.com"}}
    assert document["task"]["state"] == "QUEUED"


def test_resubmitting_with_the_same_key_replays(invoke):
    first = _submit_json(invoke, "report.build", "--key", "retry-me-1")
    again = _submit_json(invoke, "report.build", "--key", "retry-me-1")
    assert again["created"] is False
    assert again["task"]["task_id"] == first["task"]["task_id"]
    table = invoke("submit", "report.build", "--key", "retry-me-1")
    assert "Already submitted with this key" in table.stdout
    assert "idempotency key:" not in table.stderr  # only a generated key is announced


def test_get_shows_the_task_and_history(invoke):
    task_id = _submit_json(invoke, "email.send")["task"]["task_id"]
    result = invoke("get", task_id)
    assert result.exit_code == 0, result.output
    assert task_id in result.stdout and "History" in result.stdout
    assert "submitted [api]" in result.stdout
    document = json.loads(invoke("get", task_id, "--json").stdout)
    assert document["task"]["task_id"] == task_id
    assert document["events"][0]["to_state"] == "QUEUED"
    assert document["events"][0]["from_state"] is None


def test_rpc_errors_are_one_line_with_exit_1(invoke):
    result = invoke("get", "f" * 32)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: NOT_FOUND: task {'f' * 32} not found"


def test_deadline_is_applied(invoke):
    result = invoke("submit", SLOW_TYPE, "--timeout", "0.3")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: DEADLINE_EXCEEDED")


def test_list_passes_filters(invoke, service):
    fake, _ = service
    _submit_json(invoke, "email.send")
    result = invoke("list", "--state", "queued", "--type", "email.send", "--limit", "1", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 1
    _, request = fake.requests[-1]
    assert request.state == pb.TASK_STATE_QUEUED
    assert (request.task_type, request.limit) == ("email.send", 1)


def test_cancel_sends_the_reason(invoke, service):
    fake, _ = service
    task_id = _submit_json(invoke, "email.send")["task"]["task_id"]
    result = invoke("cancel", task_id, "--reason", "duplicate order")
    assert result.exit_code == 0, result.output
    assert fake.requests[-1][1].reason == "duplicate order"
    assert "CANCELLED" in result.stdout


@pytest.mark.parametrize(("task_type", "exit_code"), [("email.send", 0), (FAILING_TYPE, 3)])
def test_watch_prints_each_state_and_exits_by_outcome(invoke, task_type, exit_code):
    task_id = _submit_json(invoke, task_type)["task"]["task_id"]
    result = invoke("watch", task_id)
    assert result.exit_code == exit_code, result.output
    states = [line.split()[2] for line in result.stdout.splitlines() if line.strip()]
    final = "FAILED" if exit_code else "SUCCEEDED"
    assert states == ["QUEUED", "RUNNING", final]


def test_submit_wait_reports_the_final_state(invoke):
    result = invoke("submit", "email.send", "--wait", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["task"]["state"] == "SUCCEEDED"


def test_server_name_can_be_overridden(invoke):
    good = invoke("list", "--limit", "1", tls_env={"CONVEYOR_TLS_SERVER_NAME": "localhost"})
    assert good.exit_code == 0, good.output
    bad = invoke("list", "--limit", "1", tls_env={"CONVEYOR_TLS_SERVER_NAME": "other.example"})
    assert bad.exit_code == 1 and "error: UNAVAILABLE" in bad.stderr


def test_rogue_identity_is_refused(invoke, certs):
    result = invoke("list", tls_env=certs.rogue.env())
    assert result.exit_code == 1
    assert result.stderr.startswith("error: UNAVAILABLE")
