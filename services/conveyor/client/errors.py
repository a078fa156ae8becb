"""What a failed call raises: one exception carrying the gRPC status, and for INVALID_ARGUMENT
the offending fields (google.rpc.BadRequest in the status details), for RESOURCE_EXHAUSTED the
server's `retry-after`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2

# Trailing metadata: the rich status (google.rpc.Status) and the quota's retry-after (seconds).
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
RETRY_AFTER_KEY = "retry-after"


@dataclass(frozen=True)
class FieldViolation:
    field: str  # e.g. "payload.lines[0].quantity"
    description: str


class ConveyorError(Exception):
    """A call the API answered with an error (or that ran out of its deadline)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        violations: Sequence[FieldViolation] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.violations = tuple(violations)
        self.retry_after = retry_after

    @classmethod
    def from_rpc(
        cls, code: grpc.StatusCode, details: str, trailing: Sequence[tuple[str, str | bytes]]
    ) -> ConveyorError:
        violations: list[FieldViolation] = []
        retry_after: float | None = None
        for key, value in trailing or ():
            if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
                violations.extend(_violations(value))
            elif key == RETRY_AFTER_KEY:
                try:
                    retry_after = float(value)
                except ValueError:
                    retry_after = None
        return cls(code, details, violations, retry_after)


def _violations(status_bytes: bytes) -> list[FieldViolation]:
    status = status_pb2.Status.FromString(status_bytes)
    found: list[FieldViolation] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            found.extend(
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            )
    return found


def from_sync(exc: grpc.RpcError) -> ConveyorError:
    """The ConveyorError of a sync call's RpcError (every one the library raises is a Call)."""
    if isinstance(exc, grpc.Call):
        return ConveyorError.from_rpc(exc.code(), exc.details() or "", exc.trailing_metadata())
    return ConveyorError(grpc.StatusCode.UNKNOWN, str(exc))
