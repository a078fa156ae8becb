from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from conveyor_dev.local.certs import generate_deployment, generate_rogue_client
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension:
    return cert.extensions.get_extension_for_class(kind)


def test_clients_carry_their_tenant_and_chain_to_the_ca(certs):
    ca = _load(certs.deployment.ca_cert)
    assert set(certs.deployment.clients) == {"acme", "globex"}
    for tenant, files in certs.deployment.clients.items():
        cert = _load(files.cert)
        assert _common_name(cert) == tenant
        assert files.ca == certs.deployment.ca_cert
        cert.verify_directly_issued_by(ca)
        assert _ext(cert, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.CLIENT_AUTH]
        )


def test_ca_extensions(certs):
    ca = _load(certs.deployment.ca_cert)
    basic = _ext(ca, x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = _ext(ca, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"


def test_server_certificate_extensions_and_names(certs):
    ca = _load(certs.deployment.ca_cert)
    server = _load(certs.server.cert)
    server.verify_directly_issued_by(ca)
    basic = _ext(server, x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    usage = _ext(server, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert _ext(server, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    aki = _ext(server, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(ca, x509.SubjectKeyIdentifier).value.digest
    sans = _ext(server, x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }


def test_extra_server_names_and_short_validity(tmp_path):
    deployment = generate_deployment(
        tmp_path,
        ["acme"],
        server_names=["api.internal", "10.0.0.7"],
        validity=dt.timedelta(hours=2),
    )
    server = _load(deployment.server.cert)
    sans = _ext(server, x509.SubjectAlternativeName).value
    assert "api.internal" in sans.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("10.0.0.7") in sans.get_values_for_type(x509.IPAddress)
    lifetime = server.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=1) < lifetime <= dt.timedelta(hours=2)


def test_keys_are_private_and_the_directory_ignores_itself(certs):
    directory = certs.deployment.directory
    keys = sorted(directory.rglob("*.key"))
    assert len(keys) == 4  # server, two tenants, rogue client; the CA keys are never written
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert (directory / ".gitignore").read_text().splitlines()[-1] == "*"


def test_rogue_client_is_signed_by_another_ca_but_trusts_the_real_one(certs):
    rogue = _load(certs.rogue.cert)
    assert _common_name(rogue) == "acme"
    assert rogue.issuer != _load(certs.deployment.ca_cert).subject
    assert certs.rogue.ca == certs.deployment.ca_cert


@pytest.mark.parametrize("tenant", ["Acme", "has space", "-leading-dash", ""])
def test_invalid_tenant_names_are_refused(tmp_path, tenant):
    with pytest.raises(ValueError, match="not valid tenant names"):
        generate_deployment(tmp_path, ["acme", tenant])


def test_tls_files_feed_settings_and_env(certs):
    files = certs.client("globex")
    assert files.settings().pem("cert") == files.cert.read_bytes()
    assert files.env() == {
        "CONVEYOR_TLS_CA_FILE": str(files.ca),
        "CONVEYOR_TLS_CERT_FILE": str(files.cert),
        "CONVEYOR_TLS_KEY_FILE": str(files.key),
    }


def test_rogue_generation_does_not_touch_the_deployment(tmp_path):
    deployment = generate_deployment(tmp_path, ["acme"])
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    generate_rogue_client(tmp_path / "rogue", "acme", deployment.ca_cert)
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
