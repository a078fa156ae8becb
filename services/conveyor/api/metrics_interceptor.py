"""Server interceptor exporting go-grpc-prometheus metrics (names and label values).

grpc_code values use Go's spelling (codes.Code.String(): "OK", "InvalidArgument", "Canceled")
so that dashboards and rules written for go-grpc-prometheus work unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from conveyor.telemetry import metrics

GO_CODE_NAMES = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}


# A client whose deadline passes cancels the call (RST_STREAM) by its own clock; the server's
# deadline, set from the grpc-timeout header when it arrived, ends a little later. A cancel that
# arrives this close to the server's deadline is that deadline, seen first by the client.
DEADLINE_SKEW_SECONDS = 0.5


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


class MetricsInterceptor(grpc.ServerInterceptor):
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, method = _split(handler_call_details.method)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, "unary", service, method),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, "server_stream", service, method),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return handler  # no client-streaming RPCs in Conveyor

    @staticmethod
    def _finish(
        labels: tuple[str, str, str],
        context: grpc.ServicerContext,
        started: float,
        fallback: grpc.StatusCode,
    ) -> None:
        code = context.code()
        if code is None and not context.is_active():
            # The RPC ended before the handler did: the client cancelled or its deadline passed
            # (WatchTask's poll loop notices only then; a stream parked at a yield is closed).
            left = context.time_remaining()
            expired = left is not None and left <= DEADLINE_SKEW_SECONDS
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
        code = code or fallback
        metrics.grpc_server_handled_total.labels(*labels, GO_CODE_NAMES[code]).inc()
        metrics.grpc_server_handling_seconds.labels(*labels).observe(time.perf_counter() - started)

    def _unary(self, behavior: Any, kind: str, service: str, method: str) -> Any:
        labels = (kind, service, method)

        def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
            metrics.grpc_server_started_total.labels(*labels).inc()
            started = time.perf_counter()
            fallback = grpc.StatusCode.UNKNOWN
            try:
                response = behavior(request, context)
                fallback = grpc.StatusCode.OK
                return response
            finally:
                self._finish(labels, context, started, fallback)

        return wrapper

    def _stream(self, behavior: Any, kind: str, service: str, method: str) -> Any:
        labels = (kind, service, method)

        def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            metrics.grpc_server_started_total.labels(*labels).inc()
            started = time.perf_counter()
            fallback = grpc.StatusCode.UNKNOWN
            try:
                yield from behavior(request, context)
                fallback = grpc.StatusCode.OK
            except GeneratorExit:
                fallback = grpc.StatusCode.CANCELLED  # closed mid-stream: the client went away
                raise
            finally:
                self._finish(labels, context, started, fallback)

        return wrapper
