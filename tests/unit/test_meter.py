"""The metering proxy over loopback: what it forwards, what it counts, how its socket is set."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conveyor_dev.local.meter import MeteringProxy


class _Upstream(BaseHTTPRequestHandler):
    """A stand-in SQS endpoint: answers every POST with a fixed JSON body."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"Messages": []}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[MeteringProxy]:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    meter = MeteringProxy(f"http://127.0.0.1:{upstream.server_address[1]}")
    try:
        yield meter
    finally:
        meter.close()
        upstream.shutdown()
        upstream.server_close()


def _post(proxy: MeteringProxy, body: bytes, headers: dict[str, str]) -> bytes:
    host, port = proxy.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", "/", body=body, headers=headers)
        return conn.getresponse().read()
    finally:
        conn.close()


def test_the_proxy_answers_with_nagle_off(proxy: MeteringProxy) -> None:
    """Its response goes out as headers then body: with Nagle's algorithm on, the body waits
    for the client's delayed ACK (~40 ms per request), so the accepted socket has it off."""
    # The option is read as the server lets go of the socket (after its handler set it up and
    # answered): read later, from the test, the socket may already be closed.
    nodelay: list[int] = []
    released = threading.Event()
    server: Any = proxy._server
    shutdown_request = server.shutdown_request

    def recording(request: socket.socket) -> None:
        nodelay.append(request.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        released.set()
        shutdown_request(request)

    server.shutdown_request = recording
    assert _post(proxy, b"{}", {"X-Amz-Target": "AmazonSQS.ReceiveMessage"}) == (
        b'{"Messages": []}'
    )
    assert released.wait(10), "the proxy never released the accepted socket"
    assert len(nodelay) == 1
    assert nodelay[0]


def test_every_request_is_counted_by_operation_whatever_its_protocol(
    proxy: MeteringProxy,
) -> None:
    _post(proxy, b"{}", {"X-Amz-Target": "AmazonSQS.ReceiveMessage"})
    _post(
        proxy,
        b"Action=DeleteMessage&QueueUrl=q",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert proxy.billing.snapshot()["requests"] == {"ReceiveMessage": 1, "DeleteMessage": 1}
