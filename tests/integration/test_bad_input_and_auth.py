"""Bad input is refused with the offending field and stores nothing; only the deployment CA's
clients get in; deadlines are honoured."""

from __future__ import annotations

import uuid

import grpc
import pytest
from conveyor import schema
from conveyor.api.auth import secure_channel
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc
from conveyor_dev.local.certs import generate_rogue_client
from conveyor_dev.local.system import LocalSystem
from google.rpc import error_details_pb2
from grpc_status import rpc_status

pytestmark = pytest.mark.integration

TOO_BIG = b"x" * (64 * 1024 + 1)


def _stored_for_key(system: LocalSystem, tenant: str, key: str) -> bool:
    ddb = system.backend.client("dynamodb")
    item = ddb.get_item(
        TableName=system.table_name,
        Key={"pk": {"S": schema.idempotency_pk(tenant, key)}, "sk": {"S": "IDEM"}},
        ConsistentRead=True,
    )
    return "Item" in item


def _items_mentioning(system: LocalSystem, *marks: str) -> int:
    """Items in the emulator's table (read there, not through the API) holding any of `marks`
    in a key or attribute: the task, its PAYLOAD item, its idempotency record."""
    ddb = system.backend.client("dynamodb")
    count = 0
    for page in ddb.get_paginator("scan").paginate(
        TableName=system.table_name, ConsistentRead=True
    ):
        for item in page["Items"]:
            text = repr(item)
            count += any(mark in text or mark.encode() in text.encode() for mark in marks)
    return count


def _bad_request(err: grpc.RpcError) -> list[tuple[str, str]]:
    """The google.rpc.BadRequest field violations in a status's details."""
    status = rpc_status.from_call(err)
    assert status is not None, "no rich status in the trailers"
    violations = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad)
        violations += [(v.field, v.description) for v in bad.field_violations]
    return violations


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"task_type": ""}, "task_type"),
        ({"task_type": "Upper.Case"}, "task_type"),
        ({"task_type": "a" * 65}, "task_type"),
        ({"payload": TOO_BIG}, "payload"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "spaces are not allowed"}, "idempotency_key"),
        ({"idempotency_key": "k" * 129}, "idempotency_key"),
        ({"max_attempts": 21}, "max_attempts"),
    ],
)
def test_bad_submit_names_the_field_and_stores_nothing(acme, system, request_fields, field):
    key = uuid.uuid4().hex
    fields = {"task_type": "demo.sleep", "payload": b"{}", "idempotency_key": key}
    fields.update(request_fields)

    with pytest.raises(grpc.RpcError) as err:
        acme.SubmitTask(pb.SubmitTaskRequest(**fields), timeout=10)

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}:")
    assert not _stored_for_key(system, "acme", key)


def test_a_payload_that_does_not_fit_its_model_names_every_field_and_stores_nothing(acme, system):
    key, mark = uuid.uuid4().hex, uuid.uuid4().hex
    payload = f'{{"seconds": "soon", "effect_first": [1], "mark": "{mark}"}}'.encode()
    with pytest.raises(grpc.RpcError) as err:
        acme.SubmitTask(
            pb.SubmitTaskRequest(task_type="demo.sleep", payload=payload, idempotency_key=key),
            timeout=10,
        )

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = _bad_request(err.value)
    assert [field for field, _ in violations] == ["payload.seconds", "payload.effect_first"]
    for field, problem in violations:
        assert f"{field}: {problem}" in err.value.details()  # readable in the message too
    assert err.value.details().startswith("payload: does not fit Sleep of demo.sleep")
    assert _items_mentioning(system, key, mark) == 0


def test_an_undeclared_task_type_is_refused_naming_the_declared_ones(acme, system):
    key = uuid.uuid4().hex
    with pytest.raises(grpc.RpcError) as err:
        acme.SubmitTask(
            pb.SubmitTaskRequest(task_type="demo.sleeep", payload=b"{}", idempotency_key=key),
            timeout=10,
        )

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'demo.sleeep' is not a declared task type" in err.value.details()
    assert "demo.charge, demo.flaky, demo.noop, demo.poison, demo.reject, demo.sleep" in (
        err.value.details()
    )
    assert [field for field, _ in _bad_request(err.value)] == ["task_type"]
    assert _items_mentioning(system, key) == 0


def test_a_submit_may_lower_its_type_s_attempts_but_not_raise_them(acme, system):
    lowered = acme.SubmitTask(
        pb.SubmitTaskRequest(
            task_type="demo.poison", payload=b"{}", idempotency_key=uuid.uuid4().hex
        ),
        timeout=10,
    )
    assert lowered.task.max_attempts == 3  # the type's, not the server default (5)
    key = uuid.uuid4().hex
    with pytest.raises(grpc.RpcError) as err:
        acme.SubmitTask(
            pb.SubmitTaskRequest(
                task_type="demo.poison", payload=b"{}", idempotency_key=key, max_attempts=4
            ),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "max_attempts: is 4; demo.poison's limit is 3"
    assert _items_mentioning(system, key) == 0


def test_the_limits_themselves_are_accepted(acme, system):
    key = "k" * 128
    limit = 64 * 1024
    payload = b'{"pad": "' + b"x" * (limit - 11) + b'"}'
    response = acme.SubmitTask(
        pb.SubmitTaskRequest(
            task_type="demo.noop", payload=payload, idempotency_key=key, max_attempts=20
        ),
        timeout=10,
    )
    assert response.created
    assert _stored_for_key(system, "acme", key)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.GetTask(pb.GetTaskRequest(task_id="not-an-id"), timeout=5), "task_id"),
        (lambda s: s.CancelTask(pb.CancelTaskRequest(task_id="F" * 32), timeout=5), "task_id"),
        (
            lambda s: s.CancelTask(
                pb.CancelTaskRequest(task_id="a" * 32, reason="r" * 257), timeout=5
            ),
            "reason",
        ),
        (lambda s: list(s.ListTasks(pb.ListTasksRequest(page_size=101), timeout=5)), "page_size"),
        (lambda s: list(s.ListTasks(pb.ListTasksRequest(state=99), timeout=5)), "state"),
        (lambda s: list(s.ListTasks(pb.ListTasksRequest(task_type="BAD"), timeout=5)), "task_type"),
        (lambda s: list(s.WatchTask(pb.WatchTaskRequest(task_id=""), timeout=5)), "task_id"),
    ],
)
def test_bad_reads_name_the_field(acme, call, field):
    with pytest.raises(grpc.RpcError) as err:
        call(acme)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}:")


def test_unknown_task_is_not_found(acme):
    with pytest.raises(grpc.RpcError) as err:
        acme.GetTask(pb.GetTaskRequest(task_id=uuid.uuid4().hex), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_deadline_too_short_for_the_store_fails_fast_and_stores_nothing(acme, system):
    key = uuid.uuid4().hex
    with pytest.raises(grpc.RpcError) as err:
        acme.SubmitTask(
            pb.SubmitTaskRequest(task_type="demo.sleep", payload=b"{}", idempotency_key=key),
            timeout=0.03,
        )
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert not _stored_for_key(system, "acme", key)


def test_client_without_certificate_is_refused(system):
    creds = grpc.ssl_channel_credentials(root_certificates=system.certs.ca_cert.read_bytes())
    with grpc.secure_channel(system.api_address, creds) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.ListTasks(pb.ListTasksRequest(), timeout=5))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_from_another_ca_is_refused(system):
    # An "acme" certificate signed by an unrelated CA; it trusts the real server, so the only
    # reason for the failure is the server refusing the client.
    rogue = generate_rogue_client(system.workdir / "rogue", "acme", system.certs.ca_cert)
    with secure_channel(system.api_address, rogue.settings()) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.ListTasks(pb.ListTasksRequest(), timeout=5))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_is_refused(system):
    with grpc.insecure_channel(system.api_address) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.GetTask(pb.GetTaskRequest(task_id=uuid.uuid4().hex), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
