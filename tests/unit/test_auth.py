"""mTLS over real gRPC on loopback: the health service plus a tiny handler that reports the
tenant the server derived from the client certificate."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest
from conveyor.api.auth import secure_channel, server_credentials, tenant_of
from conveyor.settings import TlsSettings
from conveyor_dev.local.certs import TlsFiles
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

WHOAMI = "/conveyor.test.Identity/WhoAmI"
DEADLINE_SECONDS = 5


def _whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
    return tenant_of(context).encode()


@pytest.fixture(scope="module")
def server_port(certs) -> Iterator[int]:
    yield from _serve(certs.server.settings())


def _serve(tls: TlsSettings) -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # No (de)serializers: the handler receives and returns raw bytes.
    handler = grpc.unary_unary_rpc_method_handler(_whoami)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("conveyor.test.Identity", {"WhoAmI": handler})]
    )
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tls))
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


# A deployment made here with `cryptography` alone, not the project's certificate helper, so
# that the certificates the guard is tested with cannot share a blind spot with the code that
# normally makes them. The CA key is kept so that the test can issue odd subjects.


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class _HandmadeCa:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls) -> _HandmadeCa:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Handmade test CA")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    def issue(
        self, subject: x509.Name, usage: x509.ObjectIdentifier, *, san: bool = False
    ) -> TlsSettings:
        """TlsSettings (inline PEM) for a new leaf with `subject`, trusting this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
            )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return TlsSettings(
            tls_ca_pem=_pem(self.cert),
            tls_cert_pem=_pem(builder.sign(self.key, hashes.SHA256())),
            tls_key_pem=key_pem,
        )


def _cn(value: str) -> x509.NameAttribute:
    return x509.NameAttribute(NameOID.COMMON_NAME, value)


@pytest.fixture(scope="module")
def handmade() -> Iterator[tuple[_HandmadeCa, int]]:
    """The hand-made CA and the port of a server whose deployment CA it is."""
    ca = _HandmadeCa.create()
    server_tls = ca.issue(
        x509.Name([_cn("Handmade server")]), ExtendedKeyUsageOID.SERVER_AUTH, san=True
    )
    for port in _serve(server_tls):
        yield ca, port


def _whoami_as(handmade: tuple[_HandmadeCa, int], subject: x509.Name) -> str:
    ca, port = handmade
    tls = ca.issue(subject, ExtendedKeyUsageOID.CLIENT_AUTH)
    with secure_channel(f"127.0.0.1:{port}", tls, server_name_override="localhost") as channel:
        return _whoami_over(channel)


def test_a_handmade_certificate_with_one_common_name_is_its_tenant(handmade):
    # The control for the refusals below: the hand-made deployment itself is accepted.
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Org"), _cn("ta")])
    assert _whoami_as(handmade, subject) == "ta"


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param(x509.Name([_cn("ta"), _cn("tb")]), id="two-rdns"),
        pytest.param(x509.Name([_cn("tb"), _cn("ta")]), id="two-rdns-reversed"),
        pytest.param(
            x509.Name([x509.RelativeDistinguishedName([_cn("ta"), _cn("tb")])]),
            id="one-multivalued-rdn",
        ),
        pytest.param(x509.Name([_cn("ta"), _cn("ta")]), id="the-same-name-twice"),
        pytest.param(
            x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ta")]), id="no-common-name"
        ),
    ],
)
def test_a_certificate_of_the_deployment_ca_without_exactly_one_common_name_is_refused(
    handmade, subject
):
    with pytest.raises(grpc.RpcError) as err:
        _whoami_as(handmade, subject)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


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


def _self_signed_pem(common_name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([_cn(common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _with_non_utf8_common_name() -> bytes:
    """A certificate whose Common Name is a UTF8String holding bytes that are not UTF-8 (the
    signature no longer matches, which is fine: tenant_of reads a certificate gRPC verified)."""
    pem = _self_signed_pem("XQXQ")
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    broken = der.replace(b"\x0c\x04XQXQ", b"\x0c\x04\xff\xfe\xff\xfe")
    assert broken != der
    body = base64.encodebytes(broken)
    return b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param({}, id="plaintext-or-no-certificate"),
        pytest.param({"x509_pem_cert": []}, id="empty"),
        pytest.param({"x509_pem_cert": [b"not a certificate"]}, id="not-a-certificate"),
        pytest.param(
            {"x509_pem_cert": [_self_signed_pem("acme"), _self_signed_pem("globex")]},
            id="two-certificates",
        ),
        pytest.param({"x509_pem_cert": [_self_signed_pem("Conveyor API")]}, id="not-a-tenant"),
        pytest.param({"x509_pem_cert": [_with_non_utf8_common_name()]}, id="not-utf8"),
        # What gRPC reports for a certificate naming two tenants: the single name must not be
        # believed when the certificate is absent.
        pytest.param({"x509_common_name": [b"acme"]}, id="common-name-without-certificate"),
    ],
)
def test_tenant_of_rejects_missing_or_invalid_names(auth):
    context = _FakeContext(auth)
    with pytest.raises(_Aborted):
        tenant_of(context)  # type: ignore[arg-type]
    assert context.code == grpc.StatusCode.UNAUTHENTICATED


def test_tenant_of_reads_the_common_name_of_the_certificate():
    context = _FakeContext({"x509_pem_cert": [_self_signed_pem("acme")]})
    assert tenant_of(context) == "acme"  # type: ignore[arg-type]
