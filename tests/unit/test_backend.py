"""The backend harness on this machine: real emulator subprocesses, started and stopped."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conveyor_dev.emulators.backend import (
    EMULATOR_CREDENTIALS,
    Backend,
    BackendError,
    choose_backend,
    docker_available,
    start_backend,
)

REGION = "eu-west-1"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answers(url: str) -> bool:
    try:
        with _NO_PROXY.open(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def _child_pids() -> set[int]:
    """This process's children, from /proc (Linux)."""
    pids: set[int] = set()
    for children in Path("/proc/self/task").glob("*/children"):
        pids.update(int(pid) for pid in children.read_text().split())
    return pids


def _installed_or_skip(kind: str) -> None:
    try:
        start_backend({"CONVEYOR_BACKEND": kind}).close()
    except BackendError as missing:
        pytest.skip(f"{kind} cannot start here: {missing}")


@pytest.fixture(scope="module")
def ministack() -> Iterator[Backend]:
    with start_backend({"CONVEYOR_BACKEND": "ministack", "AWS_REGION": REGION}) as backend:
        yield backend


def test_the_default_is_ministack_whether_or_not_docker_answers():
    assert choose_backend({}) == "ministack"


def test_ministack_serves_all_three_services_keeps_files_in_a_temp_dir_and_is_gone_on_close():
    backend = start_backend({"AWS_REGION": REGION})
    data_dir = Path(os.readlink(f"/proc/{backend.pid}/cwd"))
    port = backend.endpoint_url.rsplit(":", 1)[1]
    try:
        assert backend.kind == "ministack"
        assert backend.endpoint_url.startswith("http://127.0.0.1:")
        assert backend.region == REGION
        url = backend.client("sqs").create_queue(
            QueueName="probe.fifo", Attributes={"FifoQueue": "true"}
        )["QueueUrl"]
        assert (
            f":{REGION}:"
            in backend.client("sqs").get_queue_attributes(
                QueueUrl=url, AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
        )
        assert backend.client("dynamodb").list_tables()["TableNames"] == []
        backend.client("secretsmanager").create_secret(Name="probe", SecretString="s")
        # MiniStack writes its pid file to TMPDIR: ours, not the machine's /tmp.
        assert (data_dir / f"ministack-{port}.pid").exists()
        assert not Path(tempfile.gettempdir(), f"ministack-{port}.pid").exists()
    finally:
        backend.close()
    assert not _answers(f"{backend.endpoint_url}/_ministack/health")
    assert not data_dir.exists()
    backend.close()  # idempotent


def test_emulator_env_carries_endpoint_region_and_fake_credentials(ministack):
    assert ministack.env() == {
        "AWS_ENDPOINT_URL": ministack.endpoint_url,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        **EMULATOR_CREDENTIALS,
    }


def test_child_env_for_an_emulator_drops_real_identity_and_foreign_endpoint_variables(ministack):
    base = {
        "PATH": "/bin",
        "AWS_PROFILE": "prod",
        "AWS_SESSION_TOKEN": "real",
        "AWS_REGION": "x",
        "AWS_ENDPOINT_URL_DYNAMODB": "http://elsewhere:1",
    }
    env = ministack.child_env(base)
    assert env["PATH"] == "/bin"
    assert "AWS_PROFILE" not in env and "AWS_SESSION_TOKEN" not in env
    assert "AWS_ENDPOINT_URL_DYNAMODB" not in env
    assert env["AWS_REGION"] == REGION


def test_explicit_endpoint_wins_and_starts_nothing(ministack):
    children = _child_pids()
    environ = {"AWS_ENDPOINT_URL": ministack.endpoint_url, "AWS_REGION": REGION}
    with start_backend(environ) as explicit:
        assert explicit.kind == "explicit"
        assert explicit.endpoint_url == ministack.endpoint_url
        assert _child_pids() == children
        # No credentials are invented for an endpoint the caller chose.
        assert "AWS_ACCESS_KEY_ID" not in explicit.env()
        sqs = explicit.client(
            "sqs", aws_access_key_id="caller", aws_secret_access_key="caller-secret"
        )
        sqs.create_queue(QueueName="made-through-explicit")
    # The explicit backend reached the very same server.
    assert ministack.client("sqs").get_queue_url(QueueName="made-through-explicit")["QueueUrl"]
    assert _answers(f"{ministack.endpoint_url}/_ministack/health"), "a borrowed endpoint stays up"


def test_a_missing_emulator_install_is_a_clear_error_naming_make_setup(tmp_path):
    with pytest.raises(BackendError, match=r"MiniStack is not installed .*run `make setup`"):
        start_backend({"CONVEYOR_EMULATORS_DIR": str(tmp_path)})
    with pytest.raises(BackendError, match=r"DynamoDB Local is not installed .*run `make setup`"):
        start_backend(
            {"CONVEYOR_BACKEND": "dynamodb-local", "CONVEYOR_EMULATORS_DIR": str(tmp_path)}
        )


def test_moto_stays_startable_for_the_conformance_suite():
    with start_backend({"CONVEYOR_BACKEND": "moto"}) as moto:
        assert moto.kind == "moto"
        assert _answers(f"{moto.endpoint_url}/moto-api/")
        assert moto.client("dynamodb").list_tables()["TableNames"] == []


def test_dynamodb_local_serves_dynamodb_on_its_own_endpoint_that_botocore_finds_from_env():
    _installed_or_skip("dynamodb-local")
    with start_backend({"CONVEYOR_BACKEND": "dynamodb-local"}) as backend:
        ddb_url = backend.endpoint_for("dynamodb")
        assert ddb_url != backend.endpoint_url
        assert backend.endpoint_for("sqs") == backend.endpoint_url
        assert backend.env()["AWS_ENDPOINT_URL_DYNAMODB"] == ddb_url
        backend.client("dynamodb").create_table(
            TableName="routed",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        # A child given only the environment (no endpoint_url) reaches DynamoDB Local for
        # DynamoDB and the other emulator for SQS, as botocore resolves per-service variables.
        probe = (
            "import boto3, json; print(json.dumps([boto3.client('dynamodb').list_tables()"
            "['TableNames'], boto3.client('sqs').meta.endpoint_url]))"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe],
            env=backend.child_env(),
            capture_output=True,
            check=True,
            text=True,
        ).stdout
        assert json.loads(out) == [["routed"], backend.endpoint_url]
    assert not _answers(ddb_url)


def test_forcing_localstack_without_docker_is_a_clear_error():
    if docker_available():
        pytest.skip("a Docker engine answers on this machine, so LocalStack can be forced")
    with pytest.raises(BackendError, match="no Docker engine answers"):
        choose_backend({"CONVEYOR_BACKEND": "localstack"})


def test_forcing_an_emulator_overrides_an_explicit_endpoint():
    environ = {"CONVEYOR_BACKEND": "moto", "AWS_ENDPOINT_URL": "http://x"}
    assert choose_backend(environ) == "moto"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"CONVEYOR_BACKEND": "aws"},
            "expected one of ministack, dynamodb-local, moto, localstack, explicit",
        ),
        ({"CONVEYOR_BACKEND": "explicit"}, "needs AWS_ENDPOINT_URL"),
    ],
)
def test_bad_forced_choices_are_refused(environ, message):
    with pytest.raises(BackendError, match=message):
        choose_backend(environ)


def test_provisioning_on_dynamodb_local_skips_only_point_in_time_recovery(caplog):
    _installed_or_skip("dynamodb-local")
    with (
        start_backend({"CONVEYOR_BACKEND": "dynamodb-local"}) as backend,
        caplog.at_level(logging.WARNING, logger="conveyor_dev.emulators.provision"),
    ):
        resources = backend.provision("dev")
        ddb = backend.client("dynamodb")
        ttl = ddb.describe_time_to_live(TableName=resources.table_name)["TimeToLiveDescription"]
        assert ttl["TimeToLiveStatus"] == "ENABLED"  # the rest of the declaration is applied
        assert backend.client("sqs").get_queue_attributes(
            QueueUrl=resources.queue_url, AttributeNames=["RedrivePolicy"]
        )["Attributes"]["RedrivePolicy"]
    assert "does not implement UpdateContinuousBackups" in caplog.text
