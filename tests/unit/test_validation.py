"""Request validation (conveyor.api.validation): every limit rejects with the offending field
named, and every boundary value is still accepted."""

from __future__ import annotations

import pytest
from conveyor import domain
from conveyor.api import validation
from conveyor.api.validation import InvalidArgument
from conveyor.domain import TaskState
from conveyor.tasks.registry import Registry, declare
from conveyor.v1 import task_service_pb2 as pb
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field

DEFAULT_ATTEMPTS = 5
GOOD_ID = "0123456789abcdef0123456789abcdef"


class Anything(BaseModel):
    """Any JSON object."""


class Line(BaseModel):
    sku: str
    quantity: int = Field(ge=1)


class InvoiceRender(BaseModel):
    customer_id: str
    amount_cents: int
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    lines: list[Line] = []


def _handler(ctx: object, payload: object) -> None:
    return None


TYPES = Registry(
    [
        declare("demo.sleep", _handler, payload=Anything),
        declare("invoice.render", _handler, payload=InvoiceRender, max_attempts=8),
    ]
)
INVOICE = b'{"customer_id": "c-1", "amount_cents": 1200, "currency": "EUR"}'


def _submit(**overrides: object) -> pb.SubmitTaskRequest:
    fields: dict[str, object] = {
        "task_type": "demo.sleep",
        "payload": b"{}",
        "idempotency_key": "key-1",
        "max_attempts": 0,
    }
    fields.update(overrides)
    return pb.SubmitTaskRequest(**fields)  # type: ignore[arg-type]


def _check(request: pb.SubmitTaskRequest, default: int = DEFAULT_ATTEMPTS) -> int:
    return validation.submit(request, TYPES, default)


def _rejects(field: str, fn, *args: object) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        fn(*args)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    return caught.value


# ---- task type ----


@pytest.mark.parametrize(
    "value",
    ["a", "a" * 64, "demo.sleep", "a0_.-z", "x-1"],
)
def test_task_type_accepted(value: str):
    types = Registry([declare(value, _handler, payload=Anything)])
    assert validation.submit(_submit(task_type=value), types, 5) == 5


@pytest.mark.parametrize(
    "value",
    ["", "a" * 65, "Demo", "1abc", ".a", "a b", "a/b", "a#b", "abc\n", "é"],
)
def test_task_type_rejected(value: str):
    _rejects("task_type", _check, _submit(task_type=value))


def test_an_undeclared_task_type_is_rejected_naming_the_declared_ones():
    err = _rejects("task_type", _check, _submit(task_type="invoice.rendr"))
    assert "'invoice.rendr' is not a declared task type" in str(err)
    assert "known: demo.sleep, invoice.render" in str(err)


@given(st.from_regex(domain.TASK_TYPE_RE, fullmatch=True))
def test_any_task_type_matching_the_documented_pattern_is_accepted(value: str):
    assert validation.task_type(value) == value


# ---- payload ----


def test_payload_of_exactly_64_kib_is_accepted_and_one_byte_more_is_not():
    limit = 64 * 1024
    assert limit == domain.MAX_PAYLOAD_BYTES
    padded = b'{"pad": "' + b"x" * (limit - 11) + b'"}'
    assert len(padded) == limit
    _check(_submit(payload=padded))
    err = _rejects("payload", _check, _submit(payload=padded + b" "))
    assert str(limit + 1) in str(err) and str(limit) in str(err)


def test_a_payload_that_fits_its_model_is_accepted():
    assert _check(_submit(task_type="invoice.render", payload=INVOICE)) == 8


def test_every_field_that_does_not_fit_the_model_is_named_by_its_path():
    payload = b'{"amount_cents": "lots", "currency": "eur", "lines": [{"sku": "a", "quantity": 0}]}'
    err = _rejects("payload", _check, _submit(task_type="invoice.render", payload=payload))
    paths = [path for path, _ in err.violations]
    assert paths == [
        "payload.customer_id",
        "payload.amount_cents",
        "payload.currency",
        "payload.lines[0].quantity",
    ]
    for path in paths:
        assert path in str(err)  # readable in the message too
    assert "InvoiceRender of invoice.render" in str(err)


@pytest.mark.parametrize("payload", [b"", b"{not json", b"[]"])
def test_a_payload_that_is_no_json_object_is_rejected(payload: bytes):
    err = _rejects("payload", _check, _submit(payload=payload))
    assert [path for path, _ in err.violations] == ["payload"]


# ---- idempotency key ----


@pytest.mark.parametrize("value", ["k", "k" * 128, "AZaz09_.:-", "order:2024-01-01.batch_7"])
def test_idempotency_key_accepted(value: str):
    _check(_submit(idempotency_key=value))


@pytest.mark.parametrize(
    # '#' matters most: it separates the parts of the idempotency item's key.
    "value",
    ["", "k" * 129, "a b", "a#b", "a/b", "ключ", "a\n"],
)
def test_idempotency_key_rejected(value: str):
    _rejects("idempotency_key", _check, _submit(idempotency_key=value))


# ---- max attempts ----


def test_max_attempts_up_to_twenty_and_zero_means_the_default():
    assert _check(_submit(max_attempts=20)) == 20
    assert _check(_submit(max_attempts=1)) == 1
    assert _check(_submit(max_attempts=0), 7) == 7
    _rejects("max_attempts", _check, _submit(max_attempts=21))


def test_a_type_s_max_attempts_is_its_default_and_a_ceiling_a_submit_may_only_lower():
    def invoice(attempts: int) -> pb.SubmitTaskRequest:
        return _submit(task_type="invoice.render", payload=INVOICE, max_attempts=attempts)

    assert _check(invoice(0), 3) == 8  # the type's, not the API's default
    assert _check(invoice(2)) == 2
    assert _check(invoice(8)) == 8
    err = _rejects("max_attempts", _check, invoice(9))
    assert "invoice.render's limit is 8" in str(err)


# ---- list requests ----


def test_page_size_limit_and_default():
    assert validation.list_request(pb.ListTasksRequest(page_size=100)) == (None, None, 100)
    assert validation.list_request(pb.ListTasksRequest()) == (None, None, 25)
    _rejects("page_size", validation.list_request, pb.ListTasksRequest(page_size=101))


def test_list_filters_are_validated_and_translated():
    request = pb.ListTasksRequest(state=pb.TASK_STATE_DEAD, task_type="demo.poison")
    assert validation.list_request(request) == (TaskState.DEAD, "demo.poison", 25)
    _rejects("task_type", validation.list_request, pb.ListTasksRequest(task_type="Bad"))
    _rejects("state", validation.list_request, pb.ListTasksRequest(state=99))  # type: ignore[arg-type]


@pytest.mark.parametrize("state", list(TaskState))
def test_every_state_filter_maps_to_its_domain_state(state: TaskState):
    assert validation.state_filter(pb.TaskState.Value(f"TASK_STATE_{state.value}")) == state


# ---- cancel ----


def test_reason_length_boundary():
    validation.cancel(pb.CancelTaskRequest(task_id=GOOD_ID, reason="r" * 256))
    validation.cancel(pb.CancelTaskRequest(task_id=GOOD_ID))
    _rejects("reason", validation.cancel, pb.CancelTaskRequest(task_id=GOOD_ID, reason="r" * 257))


def test_cancel_checks_the_task_id():
    _rejects("task_id", validation.cancel, pb.CancelTaskRequest(task_id="nope"))


# ---- task ids ----


@pytest.mark.parametrize(
    "value",
    ["", GOOD_ID[:-1], GOOD_ID + "0", GOOD_ID.upper(), "g" * 32, GOOD_ID[:-1] + "\n"],
)
def test_task_id_rejected(value: str):
    _rejects("task_id", validation.task_id, value)


def test_task_id_accepted_and_field_name_is_the_callers():
    assert validation.task_id(GOOD_ID) == GOOD_ID
    _rejects("parent_id", validation.task_id, "x", "parent_id")


@given(st.uuids())
def test_server_generated_ids_pass_the_task_id_check(value):
    assert validation.task_id(value.hex) == value.hex


def test_every_lane_is_accepted_and_an_empty_one_is_the_default():
    assert [validation.lane(pb.SubmitTaskRequest(lane=lane)) for lane in domain.LANES] == list(
        domain.LANES
    )
    assert validation.lane(pb.SubmitTaskRequest()) == domain.DEFAULT_LANE


@pytest.mark.parametrize("value", ["urgent", "High", "default ", "low"])
def test_an_unknown_lane_is_rejected_naming_the_lanes(value: str):
    with pytest.raises(InvalidArgument) as err:
        validation.lane(pb.SubmitTaskRequest(lane=value))
    assert err.value.field == "lane"
    assert all(lane in str(err.value) for lane in domain.LANES)
