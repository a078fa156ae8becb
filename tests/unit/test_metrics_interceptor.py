"""The gRPC metrics interceptor over real gRPC on loopback: go-grpc-prometheus names and label
values, read back from prometheus_client's default REGISTRY.

A tiny generic service (raw bytes, no protobuf) runs behind the interceptor; every test uses its
own method name, so counters from other tests cannot leak into its assertions.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest
from conveyor.api.metrics_interceptor import GO_CODE_NAMES, MetricsInterceptor
from prometheus_client import REGISTRY

SERVICE = "conveyor.test.Probe"
GRACE_SECONDS = 5.0


class Probe:
    """Handlers keyed by method name; a test registers what it needs under a fresh name."""

    def __init__(self) -> None:
        self.unary: dict[str, Callable] = {}
        self.stream: dict[str, Callable] = {}
        self.released = threading.Event()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        _, _, name = details.method.rpartition("/")
        if name in self.unary:
            return grpc.unary_unary_rpc_method_handler(self.unary[name])
        if name in self.stream:
            return grpc.unary_stream_rpc_method_handler(self.stream[name])
        return None


class _Generic(grpc.GenericRpcHandler):
    def __init__(self, probe: Probe) -> None:
        self._probe = probe

    def service(self, handler_call_details):
        return self._probe.service(handler_call_details)


@pytest.fixture(scope="module")
def probe() -> Iterator[tuple[Probe, grpc.Channel]]:
    probe = Probe()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8), interceptors=[MetricsInterceptor()]
    )
    server.add_generic_rpc_handlers([_Generic(probe)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield probe, channel
    finally:
        probe.released.set()
        channel.close()
        server.stop(grace=None)


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _value(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def _labels(kind: str, method: str) -> dict[str, str]:
    return {"grpc_type": kind, "grpc_service": SERVICE, "grpc_method": method}


def _handled(kind: str, method: str, code: str) -> float:
    return _value("grpc_server_handled_total", **_labels(kind, method), grpc_code=code)


def _wait_handled(kind: str, method: str, code: str) -> None:
    """The server records after the client has its answer: poll with a deadline."""
    deadline = time.monotonic() + GRACE_SECONDS
    while _handled(kind, method, code) < 1:
        if time.monotonic() > deadline:
            codes = {c: _handled(kind, method, c) for c in GO_CODE_NAMES.values()}
            codes = {c: n for c, n in codes.items() if n}
            raise AssertionError(f"{method}: no {code} recorded; recorded: {codes}")
        time.sleep(0.01)


def _only_code(kind: str, method: str, code: str) -> None:
    _wait_handled(kind, method, code)
    for other in GO_CODE_NAMES.values():
        assert _handled(kind, method, other) == (1 if other == code else 0), other
    labels = _labels(kind, method)
    assert _value("grpc_server_started_total", **labels) == 1
    assert _value("grpc_server_handling_seconds_count", **labels) == 1
    assert _value("grpc_server_handling_seconds_bucket", **labels, le="+Inf") == 1


def _unary(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(f"/{SERVICE}/{method}")


def _stream(channel: grpc.Channel, method: str) -> grpc.UnaryStreamMultiCallable:
    return channel.unary_stream(f"/{SERVICE}/{method}")


def test_go_code_names_cover_every_grpc_status_code():
    assert set(GO_CODE_NAMES) == set(grpc.StatusCode)
    assert GO_CODE_NAMES[grpc.StatusCode.CANCELLED] == "Canceled"  # Go's spelling


def test_unary_ok(probe):
    server, channel = probe
    method = _name("Ok")
    server.unary[method] = lambda request, context: request[::-1]
    assert _unary(channel, method)(b"abc", timeout=5) == b"cba"
    _only_code("unary", method, "OK")


def test_unary_abort_records_its_code(probe):
    server, channel = probe
    method = _name("Invalid")
    server.unary[method] = lambda request, context: context.abort(
        grpc.StatusCode.INVALID_ARGUMENT, "task_type: bad"
    )
    with pytest.raises(grpc.RpcError) as caught:
        _unary(channel, method)(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _only_code("unary", method, "InvalidArgument")


def test_unary_set_code_without_abort_is_recorded(probe):
    server, channel = probe
    method = _name("NotFound")

    def handler(request, context):
        context.set_code(grpc.StatusCode.NOT_FOUND)
        context.set_details("nothing here")
        return b""

    server.unary[method] = handler
    with pytest.raises(grpc.RpcError) as caught:
        _unary(channel, method)(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    _only_code("unary", method, "NotFound")


def test_unary_exception_is_unknown(probe):
    server, channel = probe
    method = _name("Boom")

    def handler(request, context):
        raise RuntimeError("bug")

    server.unary[method] = handler
    with pytest.raises(grpc.RpcError) as caught:
        _unary(channel, method)(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNKNOWN
    _only_code("unary", method, "Unknown")


def test_unary_latency_lands_in_the_right_bucket(probe):
    server, channel = probe
    method = _name("Slow")

    def handler(request, context):
        time.sleep(0.03)  # the behaviour under test: a handler that takes 30 ms
        return b""

    server.unary[method] = handler
    _unary(channel, method)(b"", timeout=5)
    _only_code("unary", method, "OK")
    labels = _labels("unary", method)
    assert _value("grpc_server_handling_seconds_bucket", **labels, le="0.025") == 0
    assert _value("grpc_server_handling_seconds_bucket", **labels, le="0.25") == 1
    assert 0.03 <= _value("grpc_server_handling_seconds_sum", **labels) < 5


def test_unary_that_outlives_its_deadline_is_deadline_exceeded(probe):
    server, channel = probe
    method = _name("Late")

    def handler(request, context):
        while context.is_active():
            time.sleep(0.02)  # slow work that only notices the deadline afterwards
        return b"too late"

    server.unary[method] = handler
    with pytest.raises(grpc.RpcError) as caught:
        _unary(channel, method)(b"", timeout=0.2)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    _only_code("unary", method, "DeadlineExceeded")


def test_server_stream_ok(probe):
    server, channel = probe
    method = _name("List")
    server.stream[method] = lambda request, context: iter([b"1", b"2", b"3"])
    assert list(_stream(channel, method)(b"", timeout=5)) == [b"1", b"2", b"3"]
    _only_code("server_stream", method, "OK")


def test_server_stream_abort_mid_stream(probe):
    server, channel = probe
    method = _name("ListAbort")

    def handler(request, context):
        yield b"1"
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "stop")

    server.stream[method] = handler
    received = []
    with pytest.raises(grpc.RpcError) as caught:
        for item in _stream(channel, method)(b"", timeout=5):
            received.append(item)
    assert received == [b"1"]
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    _only_code("server_stream", method, "FailedPrecondition")


def test_server_stream_cancelled_while_suspended_at_a_yield(probe):
    """The client goes away between messages: the generator is closed (GeneratorExit)."""
    server, channel = probe
    method = _name("WatchIdle")

    def handler(request, context):
        for n in range(1_000_000):
            yield str(n).encode()

    server.stream[method] = handler
    call = _stream(channel, method)(b"", timeout=5)
    assert next(call) == b"0"
    call.cancel()
    _only_code("server_stream", method, "Canceled")


def test_server_stream_cancelled_while_the_handler_runs(probe):
    """The client goes away while the handler is busy (WatchTask's poll loop): the handler
    notices `is_active()` is false and returns. The client saw CANCELLED, so must the metric."""
    server, channel = probe
    method = _name("WatchBusy")
    cancelled = threading.Event()

    def handler(request, context):
        context.add_callback(cancelled.set)
        yield b"first"
        while context.is_active():
            cancelled.wait(0.05)  # the handler's own poll interval
        return

    server.stream[method] = handler
    call = _stream(channel, method)(b"", timeout=5)
    assert next(call) == b"first"
    call.cancel()
    _only_code("server_stream", method, "Canceled")


def test_server_stream_past_its_deadline_is_deadline_exceeded(probe):
    server, channel = probe
    method = _name("WatchDeadline")

    def handler(request, context):
        yield b"first"
        while context.is_active():
            time.sleep(0.02)  # the handler's own poll interval

    server.stream[method] = handler
    call = _stream(channel, method)(b"", timeout=0.3)
    assert next(call) == b"first"
    with pytest.raises(grpc.RpcError) as caught:
        next(call)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    _only_code("server_stream", method, "DeadlineExceeded")


def test_server_stream_past_its_deadline_while_blocked_sending(probe):
    """The client stops reading; the server's generator waits at a yield (flow control) when
    the deadline passes and is closed there."""
    server, channel = probe
    method = _name("FloodDeadline")

    def handler(request, context):
        while True:
            yield b"x" * 65536

    server.stream[method] = handler
    call = _stream(channel, method)(b"", timeout=0.5)
    assert len(next(call)) == 65536
    _wait_handled("server_stream", method, "DeadlineExceeded")
    _only_code("server_stream", method, "DeadlineExceeded")


def test_unknown_method_is_not_recorded(probe):
    _, channel = probe
    method = _name("Missing")
    with pytest.raises(grpc.RpcError) as caught:
        _unary(channel, method)(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert _value("grpc_server_started_total", **_labels("unary", method)) == 0
