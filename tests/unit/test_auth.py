"""mTLS over real gRPC on loopback: the health service plus a tiny handler that reports the
tenant the server derived from the client certificate."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from conveyor.api.auth import secure_channel, server_credentials, tenant_of
from conveyor.local.certs import TlsFiles
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

WHOAMI = "/conveyor.test.Identity/WhoAmI"
DEADLINE_SECONDS = 5


def _whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
    return tenant_of(context).encode()


@pytest.fixture(scope="module")
def server_port(certs) -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # No (de)serializers: the handler receives and returns raw bytes.
    handler = grpc.unary_unary_rpc_method_handler(_whoami)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("conveyor.test.Identity", {"WhoAmI": handler})]
    )
    port = server.add_secure_port("127.0.0.1:0", server_credentials(certs.server.settings()))
    server.start()
    yield port
    server.stop(grace=None)


def _check(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE_SECONDS).status


def _whoami_over(channel: grpc.Channel) -> str:
    return channel.unary_unary(WHOAMI)(b"", timeout=DEADLINE_SECONDS).decode()


@pytest.mark.parametrize("tenant", ["acme", "globex"])
def test_valid_client_is_served_and_identified(certs, server_port, tenant):
    with secure_channel(f"127.0.0.1:{server_port}", certs.client(tenant).settings()) as channel:
        assert _check(channel) == health_pb2.HealthCheckResponse.SERVING
        assert _whoami_over(channel) == tenant


def test_server_name_override_checks_the_certificate_name(certs, server_port):
    tls = certs.client("acme").settings()
    with secure_channel(f"127.0.0.1:{server_port}", tls, server_name_override="localhost") as ch:
        assert _whoami_over(ch) == "acme"
    with (
        secure_channel(f"127.0.0.1:{server_port}", tls, server_name_override="elsewhere") as ch,
        pytest.raises(grpc.RpcError) as err,
    ):
        _check(ch)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def _assert_handshake_refused(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _check(channel)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_without_certificate_is_refused(certs, server_port):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=certs.deployment.ca_cert.read_bytes()
    )
    with grpc.secure_channel(f"127.0.0.1:{server_port}", credentials) as channel:
        _assert_handshake_refused(channel)


def test_client_certificate_from_rogue_ca_is_refused(certs, server_port):
    with secure_channel(f"127.0.0.1:{server_port}", certs.rogue.settings()) as channel:
        _assert_handshake_refused(channel)


def test_server_certificate_cannot_act_as_a_client(certs, server_port):
    # Signed by the right CA, but its extended key usage is serverAuth only.
    impostor = TlsFiles(ca=certs.deployment.ca_cert, cert=certs.server.cert, key=certs.server.key)
    with secure_channel(f"127.0.0.1:{server_port}", impostor.settings()) as channel:
        _assert_handshake_refused(channel)


class _Aborted(Exception):
    pass


class _FakeContext:
    """Just enough of grpc.ServicerContext for tenant_of's rejection paths, which a correctly
    configured server never reaches over the wire (the handshake refuses such peers first)."""

    def __init__(self, auth: dict[str, list[bytes]]) -> None:
        self._auth = auth
        self.code: grpc.StatusCode | None = None

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        raise _Aborted(details)


@pytest.mark.parametrize(
    "auth",
    [
        {},  # plaintext or no client certificate
        {"x509_common_name": []},
        {"x509_common_name": [b"acme", b"globex"]},
        {"x509_common_name": [b"Conveyor API"]},
        {"x509_common_name": [b"\xff\xfe"]},
    ],
)
def test_tenant_of_rejects_missing_or_invalid_names(auth):
    context = _FakeContext(auth)
    with pytest.raises(_Aborted):
        tenant_of(context)  # type: ignore[arg-type]
    assert context.code == grpc.StatusCode.UNAUTHENTICATED
