"""mTLS material: a private CA, the API's server certificate and one client certificate per
tenant, each stored as one JSON secret `{"ca_pem", "cert_pem", "key_pem"}` in Secrets Manager.

Rotation. Leaf certificates carry `early_renewal_hours`: the first `pulumi up` inside the renewal
window issues a new certificate and writes a new secret version. The API's task definition pins
that version id in its `valueFrom`, so the same `pulumi up` rolls the API tasks onto the new
certificate. Tenants re-read their secret within the window. The CA lives ten years by default;
rotating it is a two-step change (serve a bundle of old + new CA, then drop the old) described
in infra/README.md. Private keys exist only in Pulumi state (encrypted as secrets) and in
Secrets Manager under a customer-managed KMS key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_tls as tls

CA_USES = ["cert_signing", "crl_signing", "digital_signature"]
SERVER_USES = ["digital_signature", "key_encipherment", "server_auth"]
CLIENT_USES = ["digital_signature", "key_encipherment", "client_auth"]
ORGANIZATION = "Conveyor"


@dataclass(frozen=True)
class MutualTlsArgs:
    name_prefix: str
    tenants: Sequence[str]
    server_dns_names: pulumi.Input[Sequence[str]]
    ca_validity_days: int
    leaf_validity_days: int
    renew_before_days: int
    secret_recovery_window_days: int


@dataclass(frozen=True)
class TlsSecret:
    """A stored certificate bundle and the version that holds its current value."""

    secret: aws.secretsmanager.Secret
    version: aws.secretsmanager.SecretVersion

    def value_from(self, json_key: str) -> pulumi.Output[str]:
        """An ECS `valueFrom` for one key of the bundle, pinned to the current version."""
        return pulumi.Output.concat(self.secret.arn, ":", json_key, "::", self.version.version_id)


class MutualTls(pulumi.ComponentResource):
    kms_key: aws.kms.Key
    server: TlsSecret
    clients: dict[str, TlsSecret]

    def __init__(
        self, name: str, args: MutualTlsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("conveyor:security:MutualTls", name, None, opts)
        self._name = name
        self._args = args
        child = pulumi.ResourceOptions(parent=self)

        self.kms_key = aws.kms.Key(
            f"{name}-secrets-key",
            description=f"{args.name_prefix}: encrypts the mTLS secrets",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=child,
        )
        aws.kms.Alias(
            f"{name}-secrets-key-alias",
            name=f"alias/{args.name_prefix}-tls-secrets",
            target_key_id=self.kms_key.key_id,
            opts=child,
        )

        ca_key = self._private_key(f"{name}-ca-key")
        ca_cert = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            subject=tls.SelfSignedCertSubjectArgs(
                common_name=f"{args.name_prefix} CA", organization=ORGANIZATION
            ),
            is_ca_certificate=True,
            validity_period_hours=args.ca_validity_days * 24,
            early_renewal_hours=args.renew_before_days * 24,
            allowed_uses=CA_USES,
            opts=child,
        )
        self._ca_cert_pem = ca_cert.cert_pem
        self._ca_key_pem = ca_key.private_key_pem

        self.server = self._issue(
            "server",
            common_name=f"{args.name_prefix}-api",
            dns_names=args.server_dns_names,
            allowed_uses=SERVER_USES,
            description="mTLS server certificate, key and CA of the Conveyor API",
        )
        # The tenant is the client certificate's identity: CN = tenant name.
        self.clients = {
            tenant: self._issue(
                f"client-{tenant}",
                common_name=tenant,
                dns_names=[],
                allowed_uses=CLIENT_USES,
                description=f"mTLS client certificate, key and CA for tenant {tenant}",
            )
            for tenant in args.tenants
        }
        self.register_outputs(
            {
                "server_secret_arn": self.server.secret.arn,
                "client_secret_arns": {t: s.secret.arn for t, s in self.clients.items()},
            }
        )

    def _private_key(self, resource_name: str) -> tls.PrivateKey:
        return tls.PrivateKey(
            resource_name,
            algorithm="ECDSA",
            ecdsa_curve="P256",
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _issue(
        self,
        role: str,
        *,
        common_name: str,
        dns_names: pulumi.Input[Sequence[str]],
        allowed_uses: list[str],
        description: str,
    ) -> TlsSecret:
        child = pulumi.ResourceOptions(parent=self)
        resource_name = f"{self._name}-{role}"
        key = self._private_key(f"{resource_name}-key")
        request = tls.CertRequest(
            f"{resource_name}-csr",
            private_key_pem=key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(common_name=common_name, organization=ORGANIZATION),
            dns_names=dns_names,
            opts=child,
        )
        cert = tls.LocallySignedCert(
            f"{resource_name}-cert",
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=self._ca_key_pem,
            ca_cert_pem=self._ca_cert_pem,
            validity_period_hours=self._args.leaf_validity_days * 24,
            early_renewal_hours=self._args.renew_before_days * 24,
            allowed_uses=allowed_uses,
            opts=child,
        )
        secret = aws.secretsmanager.Secret(
            resource_name,
            name=f"{self._args.name_prefix}/tls/{role}",
            description=description,
            kms_key_id=self.kms_key.arn,
            recovery_window_in_days=self._args.secret_recovery_window_days,
            opts=child,
        )
        version = aws.secretsmanager.SecretVersion(
            f"{resource_name}-value",
            secret_id=secret.id,
            secret_string=pulumi.Output.json_dumps(
                {
                    "ca_pem": self._ca_cert_pem,
                    "cert_pem": cert.cert_pem,
                    "key_pem": key.private_key_pem,
                }
            ),
            opts=child,
        )
        return TlsSecret(secret=secret, version=version)
