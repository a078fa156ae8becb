"""Which AWS errors are dependency faults (they trip the breaker) and which transaction
cancellations are conflicts (re-read and decide again)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from conveyor.aws import cancellation_reasons, is_dependency_fault


def _cancelled(*codes: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
            "CancellationReasons": [{"Code": c} for c in codes],
        },
        "TransactWriteItems",
    )


def test_cancellation_reasons_ignore_the_items_that_were_fine():
    assert cancellation_reasons(_cancelled("None", "ConditionalCheckFailed")) == {
        "ConditionalCheckFailed"
    }
    assert cancellation_reasons(ClientError({"Error": {"Code": "Other"}}, "GetItem")) == set()


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (_cancelled("None", "ThrottlingError"), True),
        (_cancelled("ProvisionedThroughputExceeded"), True),
        (_cancelled("ConditionalCheckFailed"), False),
        (_cancelled("TransactionConflict"), False),
        (_cancelled("ValidationError"), False),
        (ClientError({"Error": {"Code": "ThrottlingException"}}, "GetItem"), True),
        (ClientError({"Error": {"Code": "ConditionalCheckFailedException"}}, "PutItem"), False),
        (ReadTimeoutError(endpoint_url="http://x"), True),
    ],
)
def test_dependency_faults(error, fault):
    assert is_dependency_fault(error) is fault
