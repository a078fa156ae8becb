"""Fixtures shared by every test tier.

Nothing here is autouse and nothing changes the process environment: tests that need AWS use
`aws_backend.client(...)` in-process and `aws_backend.child_env()` for subprocesses.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conveyor_dev.emulators.backend import Backend, start_backend
from conveyor_dev.inject import install_from_env
from conveyor_dev.local.certs import (
    DeploymentCerts,
    TlsFiles,
    generate_deployment,
    generate_rogue_client,
)

TENANTS = ("acme", "globex")

# This process's AWS clients get the development instrumentation (`faults.armed` in-process);
# the services the tests start get it from the launcher the local system runs them through.
install_from_env()


@dataclass(frozen=True)
class CertSet:
    deployment: DeploymentCerts
    rogue: TlsFiles  # a client for tenant "acme" signed by an unrelated CA

    @property
    def server(self) -> TlsFiles:
        return self.deployment.server

    def client(self, tenant: str) -> TlsFiles:
        return self.deployment.clients[tenant]


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertSet:
    """A throwaway deployment CA with a server identity, clients for TENANTS and a rogue client."""
    directory = tmp_path_factory.mktemp("certs")
    deployment = generate_deployment(directory, TENANTS)
    rogue = generate_rogue_client(directory / "rogue", "acme", deployment.ca_cert)
    return CertSet(deployment=deployment, rogue=rogue)


@pytest.fixture(scope="session")
def aws_backend() -> Iterator[Backend]:
    """The AWS backend for the session, chosen by start_backend() from the real environment
    (AWS_ENDPOINT_URL if set, else the embedded MiniStack; CONVEYOR_BACKEND forces one);
    stopped at the end of the session. It sets no environment variables."""
    with start_backend() as backend:
        yield backend


@pytest.fixture(scope="session")
def aws_action_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file per session where the armed tiers' service processes record every AWS action
    they perform (conveyor.aws.ActionLog); tests/infra/test_iam_exercised.py checks it."""
    return tmp_path_factory.getbasetemp() / "aws-actions.jsonl"
