"""conveyor.client's retry policy against a real gRPC server on loopback (mTLS) that answers
from a script: UNAVAILABLE or RESOURCE_EXHAUSTED a few times, then the real answer. Proved by
counting the calls the server saw and the keys they carried, never by timing."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from conveyor.api.auth import server_credentials
from conveyor.client import AsyncClient, Client, ConveyorError, FieldViolation, RetryPolicy
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

FAST = RetryPolicy(attempts=5, initial=0.001, cap=0.01)


class ScriptedService(pb_grpc.TaskServiceServicer):
    """Fails each call with the next scripted error while there is one, then succeeds."""

    def __init__(self) -> None:
        self.script: list[tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]] = []
        self.keys: list[str] = []  # the idempotency key of every SubmitTask it saw
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    def _fail_if_scripted(self, name: str, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            step = self.script.pop(0) if self.script else None
        if step is not None:
            code, details, trailing = step
            if trailing:
                context.set_trailing_metadata(trailing)
            context.abort(code, details)

    def SubmitTask(self, request, context):
        self.keys.append(request.idempotency_key)
        if request.task_type == "bad.payload":
            violation = error_details_pb2.BadRequest.FieldViolation(
                field="payload.amount_cents", description="Input should be a valid integer"
            )
            detail = any_pb2.Any()
            detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
            status = status_pb2.Status(
                code=code_pb2.INVALID_ARGUMENT, message="payload does not fit", details=[detail]
            )
            context.abort_with_status(rpc_status.to_status(status))
        self._fail_if_scripted("SubmitTask", context)
        task = pb.Task(task_id=uuid.uuid4().hex, task_type=request.task_type)
        return pb.SubmitTaskResponse(task=task, created=True)

    def ListTasks(self, request, context):
        self._fail_if_scripted("ListTasks", context)
        for n in range(3):
            yield pb.Task(task_id=f"{n:032x}")
        if request.task_type == "stalls":  # then says nothing until the client gives up
            gone = threading.Event()
            context.add_callback(gone.set)
            gone.wait(60)


@pytest.fixture
def service(certs) -> Iterator[tuple[ScriptedService, str]]:
    scripted = ScriptedService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_TaskServiceServicer_to_server(scripted, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(certs.server.settings()))
    server.start()
    yield scripted, f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture
def client(certs, service) -> Iterator[Client]:
    with Client(service[1], certs.client("acme").settings(), retry=FAST) as c:
        yield c


UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, "task store unavailable, retry", ())


def test_submit_is_retried_on_unavailable_with_the_same_key(client, service):
    scripted, _ = service
    scripted.script = [UNAVAILABLE] * 3
    submitted = client.submit("email.send", {"to": "a@example.com"})
    assert submitted.created
    assert len(scripted.keys) == 4  # three refusals, then the answer
    assert len(set(scripted.keys)) == 1  # one key: a repeat can only replay, never duplicate


def test_retries_stop_at_the_policy_s_attempts(client, service):
    scripted, _ = service
    scripted.script = [UNAVAILABLE] * 10
    with pytest.raises(ConveyorError) as caught:
        client.submit("email.send", idempotency_key="k-1")
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert scripted.calls["SubmitTask"] == FAST.attempts


def test_other_errors_are_not_retried_and_carry_the_field_violations(client, service):
    scripted, _ = service
    with pytest.raises(ConveyorError) as caught:
        client.submit("bad.payload", {"amount_cents": "x"})
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.violations == (
        FieldViolation("payload.amount_cents", "Input should be a valid integer"),
    )
    assert len(scripted.keys) == 1


def test_resource_exhausted_waits_the_retry_after_within_the_deadline(client, service):
    scripted, _ = service
    over_quota = (grpc.StatusCode.RESOURCE_EXHAUSTED, "over quota", (("retry-after", "1"),))
    scripted.script = [over_quota]
    assert client.submit("email.send", timeout=30).created
    assert scripted.calls["SubmitTask"] == 2

    # A retry-after that ends past the call's deadline: the error at once, no second call.
    scripted.script = [over_quota]
    with pytest.raises(ConveyorError) as caught:
        client.submit("email.send", timeout=0.5)
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.retry_after == 1.0
    assert scripted.calls["SubmitTask"] == 3


def test_a_listing_is_reopened_only_before_its_first_task(client, service):
    scripted, _ = service
    scripted.script = [UNAVAILABLE] * 2
    assert len(list(client.list())) == 3
    assert scripted.calls["ListTasks"] == 3


def test_the_async_client_retries_the_same_way(certs, service):
    scripted, address = service
    scripted.script = [UNAVAILABLE] * 2

    async def run() -> None:
        async with AsyncClient(address, certs.client("acme").settings(), retry=FAST) as c:
            assert (await c.submit("email.send", b"raw", idempotency_key="k-2")).created
            assert len([t async for t in c.list()]) == 3

    asyncio.run(run())
    assert scripted.keys == ["k-2"] * 3
    assert scripted.calls["ListTasks"] == 1


def test_a_silent_listing_fails_after_its_idle_timeout_keeping_what_came(client):
    received = []
    with pytest.raises(ConveyorError) as caught:
        for task in client.list(task_type="stalls", idle_timeout=0.5):
            received.append(task.task_id)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "sent nothing for 0.5 s" in caught.value.details
    assert len(received) == 3  # no total deadline cut the listing short
