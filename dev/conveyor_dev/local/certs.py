"""Throwaway mTLS material for local runs and tests: a deployment CA, a server and tenant clients.

Everything is EC P-256 with SHA-256 signatures and a short validity, written as PEM files into a
directory of the caller's choice (keys mode 0600). The directory also gets a `.gitignore` that
ignores everything in it, so the material cannot be committed wherever the directory lives.

The CA private key is never written: all certificates are issued in one call and the key is
discarded, so nothing on disk can mint new identities. Regenerate to add a tenant.

Production material comes from the infra program (Secrets Manager); nothing here is for it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from conveyor.domain import TENANT_RE
from conveyor.settings import TlsSettings
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_VALIDITY = dt.timedelta(days=7)
# Certificates start slightly in the past so that a peer whose clock lags ours accepts them.
CLOCK_SKEW = dt.timedelta(minutes=5)
SERVER_COMMON_NAME = "Conveyor API"  # deliberately not a valid tenant name
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsFiles:
    """What one TLS endpoint needs: the CA it trusts, its own certificate and its key."""

    ca: Path
    cert: Path
    key: Path

    def env(self) -> dict[str, str]:
        """The `CONVEYOR_TLS_*_FILE` variables a child process reads into TlsSettings."""
        return {
            "CONVEYOR_TLS_CA_FILE": str(self.ca),
            "CONVEYOR_TLS_CERT_FILE": str(self.cert),
            "CONVEYOR_TLS_KEY_FILE": str(self.key),
        }

    def settings(self) -> TlsSettings:
        """TlsSettings for these files; the inline `*_PEM` sources are set to None explicitly
        so that stray variables in the caller's environment cannot make them ambiguous."""
        return TlsSettings(
            tls_ca_file=str(self.ca),
            tls_cert_file=str(self.cert),
            tls_key_file=str(self.key),
            tls_ca_pem=None,
            tls_cert_pem=None,
            tls_key_pem=None,
        )


@dataclass(frozen=True)
class DeploymentCerts:
    directory: Path
    ca_cert: Path
    server: TlsFiles
    clients: Mapping[str, TlsFiles]  # tenant -> that tenant's client files


@dataclass(frozen=True)
class _Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def generate_deployment(
    directory: Path,
    tenants: Iterable[str],
    *,
    server_names: Iterable[str] = (),
    validity: dt.timedelta = DEFAULT_VALIDITY,
) -> DeploymentCerts:
    """Create a fresh CA, a server certificate and one client certificate per tenant.

    The server certificate covers localhost, 127.0.0.1 and ::1 plus `server_names` (DNS names
    or IP addresses). Each client certificate carries its tenant as the subject Common Name,
    which is how the API identifies the caller. Existing files of the same names are replaced.
    """
    tenants = list(tenants)
    bad = [t for t in tenants if not TENANT_RE.fullmatch(t)]
    if bad:
        raise ValueError(f"not valid tenant names (must match {TENANT_RE.pattern}): {bad}")
    if len(set(tenants)) != len(tenants):
        raise ValueError(f"duplicate tenant names: {tenants}")
    directory = _prepare(directory)
    ca = _make_ca("Conveyor local deployment CA", validity)
    ca_cert = _write_cert(directory / "ca.pem", ca.cert)
    server = _issue(
        ca,
        SERVER_COMMON_NAME,
        ExtendedKeyUsageOID.SERVER_AUTH,
        _subject_alt_names([*LOOPBACK_NAMES, *server_names]),
        validity,
    )
    clients = {
        tenant: _save(
            directory,
            f"client-{tenant}",
            ca_cert,
            _issue(ca, tenant, ExtendedKeyUsageOID.CLIENT_AUTH, None, validity),
        )
        for tenant in tenants
    }
    return DeploymentCerts(
        directory=directory,
        ca_cert=ca_cert,
        server=_save(directory, "server", ca_cert, server),
        clients=clients,
    )


def generate_rogue_client(
    directory: Path,
    tenant: str,
    trusted_ca: Path,
    *,
    validity: dt.timedelta = DEFAULT_VALIDITY,
) -> TlsFiles:
    """A client certificate for `tenant` signed by an unrelated CA, for negative tests.

    The returned files trust `trusted_ca` (the real deployment CA), so the client accepts the
    server and any failure is the server rejecting the client: a valid-looking tenant name
    must not be enough without the deployment CA's signature.
    """
    directory = _prepare(directory)
    rogue = _make_ca("Rogue CA", validity)
    _write_cert(directory / "rogue-ca.pem", rogue.cert)
    client = _issue(rogue, tenant, ExtendedKeyUsageOID.CLIENT_AUTH, None, validity)
    return _save(directory, f"rogue-client-{tenant}", trusted_ca, client)


def _prepare(directory: Path) -> Path:
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (directory / ".gitignore").write_text("# throwaway TLS material: never commit\n*\n")
    return directory


def _make_ca(common_name: str, validity: dt.timedelta) -> _Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return _Issuer(cert, key)


def _issue(
    issuer: _Issuer,
    common_name: str,
    usage: x509.ObjectIdentifier,
    alt_names: x509.SubjectAlternativeName | None,
    validity: dt.timedelta,
) -> _Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    issuer_ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + validity, issuer.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski.value),
            critical=False,
        )
    )
    if alt_names is not None:
        builder = builder.add_extension(alt_names, critical=False)
    return _Issuer(builder.sign(issuer.key, hashes.SHA256()), key)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _subject_alt_names(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):  # de-duplicated, order kept
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _save(directory: Path, stem: str, ca_cert: Path, issued: _Issuer) -> TlsFiles:
    key_pem = issued.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_path = directory / f"{stem}.key"
    _write_private(key_path, key_pem)
    return TlsFiles(
        ca=ca_cert, cert=_write_cert(directory / f"{stem}.pem", issued.cert), key=key_path
    )


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start (no window where the key is world-readable); the chmod
    # covers a pre-existing file that had wider permissions.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(data)
