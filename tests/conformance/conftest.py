"""The conformance suite: the AWS semantics Conveyor relies on, run against every backend the
harness can start here, so that a difference is a documented gap, not a surprise in a tier.

Each case is parametrised over the implementations of the service it exercises (`dynamodb`
or `sqs` fixtures; Secrets Manager goes with SQS). A backend's known difference from AWS is
listed in gaps.py and becomes `xfail(strict=True)`: the case must fail there, so a gap that
closes, or a new one, turns the run red. README's emulator-gap table is rendered from gaps.py
(test_gap_table.py is the drift check).

Backends: the embedded default (MiniStack), DynamoDB Local (DynamoDB only: its SQS is moto's),
moto, LocalStack when a Docker engine answers, and an explicit endpoint when
CONVEYOR_CONFORMANCE_ENDPOINT names one (with the caller's credentials). One that cannot start
here skips, naming what is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from conveyor_dev.emulators.backend import Backend, BackendError, docker_available, start_backend
from gaps import GAPS, RACES

EXPLICIT_VAR = "CONVEYOR_CONFORMANCE_ENDPOINT"
# Implementations of each service, by the backend kind that serves it.
DYNAMODB_BACKENDS = ("ministack", "dynamodb-local", "moto", "localstack", "explicit")
SQS_BACKENDS = ("ministack", "moto", "localstack", "explicit")

pytestmark = pytest.mark.conformance


@pytest.fixture(scope="session")
def backends() -> Iterator[dict[str, Backend | str]]:
    """Backends started on first use, one per kind for the session; a str is why not."""
    started: dict[str, Backend | str] = {}
    yield started
    for backend in started.values():
        if isinstance(backend, Backend):
            backend.close()


def _environ(kind: str) -> dict[str, str] | str:
    if kind == "localstack" and not docker_available():
        return "LocalStack needs a Docker engine, and none answers here"
    if kind == "explicit":
        endpoint = os.environ.get(EXPLICIT_VAR)
        if not endpoint:
            return f"no explicit endpoint: set {EXPLICIT_VAR} to run against one"
        return {**os.environ, "CONVEYOR_BACKEND": "explicit", "AWS_ENDPOINT_URL": endpoint}
    return {"PATH": os.environ.get("PATH", ""), "CONVEYOR_BACKEND": kind}


def _backend(backends: dict[str, Backend | str], kind: str) -> Backend:
    if kind not in backends:
        environ = _environ(kind)
        if isinstance(environ, str):
            backends[kind] = environ
        else:
            try:
                backends[kind] = start_backend(environ)
            except BackendError as missing:
                backends[kind] = f"{kind} cannot start here: {missing}"
    backend = backends[kind]
    if isinstance(backend, str):
        pytest.skip(backend)
    return backend


@pytest.fixture(params=DYNAMODB_BACKENDS)
def dynamodb(request: pytest.FixtureRequest, backends: dict[str, Backend | str]) -> Any:
    """A DynamoDB client of one implementation."""
    return _backend(backends, request.param).client("dynamodb")


@pytest.fixture(params=SQS_BACKENDS)
def aws(request: pytest.FixtureRequest, backends: dict[str, Backend | str]) -> Backend:
    """A backend whose SQS and Secrets Manager are one implementation."""
    return _backend(backends, request.param)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Known gaps become xfails with the reason from gaps.py: strict, except for races."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None:
            continue
        kind = callspec.params.get("dynamodb") or callspec.params.get("aws")
        name = getattr(item, "originalname", item.name)
        gap = GAPS.get((name, kind))
        if gap is not None:
            item.add_marker(pytest.mark.xfail(strict=name not in RACES, reason=gap))
