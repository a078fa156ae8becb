"""The backend harness on this machine. The moto tests run a real moto server subprocess."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conveyor.local.backend import (
    EMULATOR_CREDENTIALS,
    Backend,
    BackendError,
    choose_backend,
    docker_available,
    start_backend,
)

FORCE_MOTO = {"CONVEYOR_BACKEND": "moto", "AWS_REGION": "eu-west-1"}
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answers(url: str) -> bool:
    try:
        with _NO_PROXY.open(f"{url}/moto-api/", timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


def _child_pids() -> set[int]:
    """This process's children, from /proc (Linux)."""
    pids: set[int] = set()
    for children in Path("/proc/self/task").glob("*/children"):
        pids.update(int(pid) for pid in children.read_text().split())
    return pids


@pytest.fixture
def moto() -> Iterator[Backend]:
    with start_backend(FORCE_MOTO) as backend:
        yield backend


def test_moto_starts_answers_boto3_and_is_gone_after_close():
    backend = start_backend(FORCE_MOTO)
    try:
        assert backend.kind == "moto"
        assert backend.endpoint_url.startswith("http://127.0.0.1:")
        assert backend.region == "eu-west-1"
        sqs = backend.client("sqs")
        url = sqs.create_queue(
            QueueName="probe.fifo",
            Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"},
        )["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["FifoQueue"])
        assert attributes["Attributes"]["FifoQueue"] == "true"
    finally:
        backend.close()
    assert not _answers(backend.endpoint_url)
    backend.close()  # idempotent


def test_emulator_env_carries_endpoint_region_and_fake_credentials(moto):
    assert moto.env() == {
        "AWS_ENDPOINT_URL": moto.endpoint_url,
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        **EMULATOR_CREDENTIALS,
    }


def test_child_env_for_an_emulator_drops_real_identity_variables(moto):
    base = {"PATH": "/bin", "AWS_PROFILE": "prod", "AWS_SESSION_TOKEN": "real", "AWS_REGION": "x"}
    env = moto.child_env(base)
    assert env["PATH"] == "/bin"
    assert "AWS_PROFILE" not in env and "AWS_SESSION_TOKEN" not in env
    assert env["AWS_REGION"] == "eu-west-1"


def test_explicit_endpoint_wins_and_starts_nothing(moto):
    children = _child_pids()
    environ = {"AWS_ENDPOINT_URL": moto.endpoint_url, "AWS_REGION": "eu-west-1"}
    with start_backend(environ) as explicit:
        assert explicit.kind == "explicit"
        assert explicit.endpoint_url == moto.endpoint_url
        assert _child_pids() == children
        # No credentials are invented for an endpoint the caller chose.
        assert "AWS_ACCESS_KEY_ID" not in explicit.env()
        sqs = explicit.client(
            "sqs", aws_access_key_id="caller", aws_secret_access_key="caller-secret"
        )
        sqs.create_queue(QueueName="made-through-explicit")
    # The explicit backend reached the very same server.
    assert moto.client("sqs").get_queue_url(QueueName="made-through-explicit")["QueueUrl"]
    assert _answers(moto.endpoint_url), "closing a borrowed endpoint must not stop it"


def test_without_docker_the_embedded_emulator_is_chosen():
    if docker_available():
        pytest.skip("a Docker engine answers on this machine, so LocalStack would be chosen")
    assert choose_backend({}) == "moto"


def test_forcing_localstack_without_docker_is_a_clear_error():
    if docker_available():
        pytest.skip("a Docker engine answers on this machine, so LocalStack can be forced")
    with pytest.raises(BackendError, match="no Docker engine answers"):
        choose_backend({"CONVEYOR_BACKEND": "localstack"})


def test_forcing_moto_overrides_an_explicit_endpoint():
    assert choose_backend({"CONVEYOR_BACKEND": "moto", "AWS_ENDPOINT_URL": "http://x"}) == "moto"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CONVEYOR_BACKEND": "aws"}, "expected one of explicit, localstack, moto"),
        ({"CONVEYOR_BACKEND": "explicit"}, "needs AWS_ENDPOINT_URL"),
    ],
)
def test_bad_forced_choices_are_refused(environ, message):
    with pytest.raises(BackendError, match=message):
        choose_backend(environ)
