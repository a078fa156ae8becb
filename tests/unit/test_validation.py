"""Request validation (conveyor.api.validation): every limit rejects with the offending field
named, and every boundary value is still accepted."""

from __future__ import annotations

import pytest
from conveyor import domain
from conveyor.api import validation
from conveyor.api.validation import InvalidArgument
from conveyor.domain import TaskState
from conveyor.v1 import task_service_pb2 as pb
from hypothesis import given
from hypothesis import strategies as st

DEFAULT_ATTEMPTS = 5
GOOD_ID = "0123456789abcdef0123456789abcdef"


def _submit(**overrides: object) -> pb.SubmitTaskRequest:
    fields: dict[str, object] = {
        "task_type": "demo.sleep",
        "payload": b"{}",
        "idempotency_key": "key-1",
        "max_attempts": 0,
    }
    fields.update(overrides)
    return pb.SubmitTaskRequest(**fields)  # type: ignore[arg-type]


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
    assert validation.submit(_submit(task_type=value), DEFAULT_ATTEMPTS) == DEFAULT_ATTEMPTS


@pytest.mark.parametrize(
    "value",
    ["", "a" * 65, "Demo", "1abc", ".a", "a b", "a/b", "a#b", "abc\n", "é"],
)
def test_task_type_rejected(value: str):
    _rejects("task_type", validation.submit, _submit(task_type=value), DEFAULT_ATTEMPTS)


@given(st.from_regex(domain.TASK_TYPE_RE, fullmatch=True))
def test_any_task_type_matching_the_documented_pattern_is_accepted(value: str):
    assert validation.task_type(value) == value


# ---- payload ----


def test_payload_of_exactly_64_kib_is_accepted_and_one_byte_more_is_not():
    limit = 64 * 1024
    assert limit == domain.MAX_PAYLOAD_BYTES
    validation.submit(_submit(payload=b"x" * limit), DEFAULT_ATTEMPTS)
    validation.submit(_submit(payload=b""), DEFAULT_ATTEMPTS)
    err = _rejects(
        "payload", validation.submit, _submit(payload=b"x" * (limit + 1)), DEFAULT_ATTEMPTS
    )
    assert str(limit + 1) in str(err) and str(limit) in str(err)


# ---- idempotency key ----


@pytest.mark.parametrize("value", ["k", "k" * 128, "AZaz09_.:-", "order:2024-01-01.batch_7"])
def test_idempotency_key_accepted(value: str):
    validation.submit(_submit(idempotency_key=value), DEFAULT_ATTEMPTS)


@pytest.mark.parametrize(
    # '#' matters most: it separates the parts of the idempotency item's key.
    "value",
    ["", "k" * 129, "a b", "a#b", "a/b", "ключ", "a\n"],
)
def test_idempotency_key_rejected(value: str):
    _rejects("idempotency_key", validation.submit, _submit(idempotency_key=value), 5)


# ---- max attempts ----


def test_max_attempts_up_to_twenty_and_zero_means_the_default():
    assert validation.submit(_submit(max_attempts=20), DEFAULT_ATTEMPTS) == 20
    assert validation.submit(_submit(max_attempts=1), DEFAULT_ATTEMPTS) == 1
    assert validation.submit(_submit(max_attempts=0), 7) == 7
    _rejects("max_attempts", validation.submit, _submit(max_attempts=21), DEFAULT_ATTEMPTS)


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
