"""Mutual TLS for the task API: credentials for both ends and the caller's tenant.

The server only accepts clients whose certificate chains to the deployment CA, and the tenant
is the subject Common Name of that certificate (DESIGN.md §2): it is never a request field, so
a client cannot ask for another tenant's tasks.

Protocol versions: gRPC's TLS stack (BoringSSL) negotiates TLS 1.2 or 1.3 only; the Python API
offers no way to lower that minimum, so every channel made here is TLS 1.2+.
"""

from __future__ import annotations

from typing import NoReturn

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from conveyor.domain import TENANT_RE
from conveyor.settings import TlsSettings

# The verified peer certificate. Not "x509_common_name": gRPC fills that with one name whatever
# the subject holds, so a certificate naming two tenants would pass as the first.
_PEER_CERTIFICATE = "x509_pem_cert"


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """Server credentials that require a client certificate signed by `tls`'s CA."""
    return grpc.ssl_server_credentials(
        [(tls.pem("key"), tls.pem("cert"))],
        root_certificates=tls.pem("ca"),
        require_client_auth=True,
    )


def channel_credentials(tls: TlsSettings) -> grpc.ChannelCredentials:
    """Client credentials: trust `tls`'s CA for the server and present `tls`'s certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=tls.pem("ca"),
        private_key=tls.pem("key"),
        certificate_chain=tls.pem("cert"),
    )


def secure_channel(
    address: str, tls: TlsSettings, server_name_override: str | None = None
) -> grpc.Channel:
    """An mTLS channel to `address` (host:port).

    `server_name_override` is the name checked against the server certificate when it differs
    from the host in `address`, e.g. when connecting through a tunnel or by an IP address the
    certificate does not list.
    """
    return grpc.secure_channel(
        address, channel_credentials(tls), options=channel_options(server_name_override)
    )


def channel_options(server_name_override: str | None) -> list[tuple[str, str]]:
    """The channel options of `secure_channel` (for a grpc.aio channel too)."""
    if server_name_override:
        return [("grpc.ssl_target_name_override", server_name_override)]
    return []


def tenant_of(context: grpc.ServicerContext) -> str:
    """The calling tenant: the Common Name of the verified client certificate.

    Aborts the RPC with UNAUTHENTICATED when there is no single Common Name in the subject or it
    is not a valid tenant name (e.g. the server's own certificate presented as a client's).
    """
    certificates = context.auth_context().get(_PEER_CERTIFICATE, [])
    if len(certificates) != 1:
        _reject(context, "a client certificate is required")
    try:
        names = x509.load_pem_x509_certificate(certificates[0]).subject.get_attributes_for_oid(
            NameOID.COMMON_NAME
        )
    except ValueError:  # unparseable, or a name that does not decode
        _reject(context, "the client certificate's subject cannot be read")
    if len(names) != 1:
        _reject(context, "the client certificate must carry exactly one subject Common Name")
    tenant = names[0].value
    if not isinstance(tenant, str) or not TENANT_RE.fullmatch(tenant):
        _reject(context, "the client certificate's Common Name is not a valid tenant name")
    return tenant


def _reject(context: grpc.ServicerContext, detail: str) -> NoReturn:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, detail)
    raise AssertionError("grpc.ServicerContext.abort returned")  # abort always raises
