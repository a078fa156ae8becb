"""Configuration from the environment (DESIGN.md §3): typed, validated at start, and one error
that names every bad or missing variable by the name the operator has to set."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import pytest
from conveyor.runtime import HAND_BACK_SECONDS
from conveyor.settings import (
    ApiSettings,
    AwsSettings,
    ConfigError,
    RelaySettings,
    StoreSettings,
    TlsSettings,
    WorkerSettings,
    load,
)
from pydantic import ValidationError

SetEnv = Callable[..., None]

WORKER_BASE = {
    "AWS_REGION": "eu-west-1",
    "CONVEYOR_TABLE_NAME": "tasks",
    "CONVEYOR_QUEUE_URL": "http://sqs/q.fifo",
    "CONVEYOR_DLQ_URL": "http://sqs/dlq.fifo",
    "CONVEYOR_QUEUE_URL_HIGH": "http://sqs/q-high.fifo",
    "CONVEYOR_DLQ_URL_HIGH": "http://sqs/dlq-high.fifo",
    "CONVEYOR_METRICS_LISTEN": ":9102",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> SetEnv:
    """A clean slate: no CONVEYOR_* or AWS_* variable (in any case) from the caller survives."""
    for name in list(os.environ):
        if name.upper().startswith(("CONVEYOR_", "AWS_")):
            monkeypatch.delenv(name)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def _named(error: ConfigError) -> set[str]:
    """The variable names listed in a ConfigError, one per line."""
    return set(re.findall(r"^  ([A-Z_]+|\(settings\)):", str(error), flags=re.MULTILINE))


def test_missing_variables_are_all_listed_by_their_env_names(env: SetEnv):
    with pytest.raises(ConfigError) as caught:
        load(WorkerSettings)
    assert _named(caught.value) == {
        "AWS_REGION",  # the standard AWS variable, not a CONVEYOR_ one
        "CONVEYOR_TABLE_NAME",
        "CONVEYOR_QUEUE_URL",
        "CONVEYOR_DLQ_URL",
        "CONVEYOR_QUEUE_URL_HIGH",  # a queue and DLQ per lane
        "CONVEYOR_DLQ_URL_HIGH",
        "CONVEYOR_METRICS_LISTEN",
    }
    assert str(caught.value).startswith("invalid configuration:")


def test_every_bad_value_is_listed_in_one_message(env: SetEnv):
    env(
        **{
            **WORKER_BASE,
            "CONVEYOR_OUTBOX_SHARDS": "many",
            "CONVEYOR_AWS_MAX_ATTEMPTS": "0",
            "CONVEYOR_LOG_LEVEL": "TRACE",
            "CONVEYOR_METRICS_LISTEN": "no-port",
            "CONVEYOR_WORKER_CONCURRENCY": "0",
            "CONVEYOR_TABLE_NAME": "ab",
        }
    )
    with pytest.raises(ConfigError) as caught:
        load(WorkerSettings)
    assert _named(caught.value) == {
        "CONVEYOR_OUTBOX_SHARDS",
        "CONVEYOR_AWS_MAX_ATTEMPTS",
        "CONVEYOR_LOG_LEVEL",
        "CONVEYOR_METRICS_LISTEN",
        "CONVEYOR_WORKER_CONCURRENCY",
        "CONVEYOR_TABLE_NAME",
    }


def test_an_empty_region_is_reported_as_aws_region(env: SetEnv):
    env(AWS_REGION="")
    with pytest.raises(ConfigError) as caught:
        load(AwsSettings)
    assert _named(caught.value) == {"AWS_REGION"}


def test_valid_environment_loads_typed_values_and_defaults(env: SetEnv):
    env(**WORKER_BASE, CONVEYOR_WORKER_CONCURRENCY="7", CONVEYOR_BACKOFF_BASE_SECONDS="0.5")
    s = load(WorkerSettings)
    assert s.aws_region == "eu-west-1"
    assert s.worker_concurrency == 7
    assert s.backoff_base_seconds == 0.5
    defaults = WorkerSettings.model_fields
    for name in ("aws_max_attempts", "outbox_shards", "message_group_shards", "lease_seconds"):
        assert getattr(s, name) == defaults[name].default, name
    assert s.aws_endpoint_url is None
    with pytest.raises(ValidationError):
        s.worker_concurrency = 8  # type: ignore[misc]  # frozen


def test_region_alias_and_endpoint(env: SetEnv):
    env(AWS_DEFAULT_REGION="ap-south-1")
    assert load(AwsSettings).aws_region == "ap-south-1"
    env(AWS_REGION="eu-central-1", AWS_ENDPOINT_URL="http://127.0.0.1:4566")
    s = load(AwsSettings)
    assert s.aws_region == "eu-central-1"  # AWS_REGION wins over AWS_DEFAULT_REGION
    assert s.aws_endpoint_url == "http://127.0.0.1:4566"


def test_a_per_service_endpoint_overrides_the_shared_one_for_that_service_only(env: SetEnv):
    env(
        AWS_REGION="eu-central-1",
        AWS_ENDPOINT_URL="http://127.0.0.1:4566",
        AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:8000",
    )
    s = load(AwsSettings)
    assert s.endpoint_for("dynamodb") == "http://127.0.0.1:8000"
    assert s.endpoint_for("sqs") == s.endpoint_for("secretsmanager") == "http://127.0.0.1:4566"


def test_without_endpoint_variables_every_service_uses_aws_own(env: SetEnv):
    env(AWS_REGION="eu-central-1", AWS_ENDPOINT_URL_SECRETS_MANAGER="http://127.0.0.1:9000")
    s = load(AwsSettings)
    assert s.endpoint_for("secretsmanager") == "http://127.0.0.1:9000"
    assert s.endpoint_for("dynamodb") is None and s.endpoint_for("sqs") is None


def test_prefixless_names_are_not_read(env: SetEnv):
    env(TABLE_NAME="tasks")
    with pytest.raises(ConfigError) as caught:
        load(StoreSettings)
    assert _named(caught.value) == {"CONVEYOR_TABLE_NAME"}


def test_each_process_only_demands_its_own_sections(env: SetEnv):
    env(**WORKER_BASE)
    load(RelaySettings)
    load(WorkerSettings)  # no TLS, no API listen address needed
    with pytest.raises(ConfigError) as caught:
        load(ApiSettings)
    named = _named(caught.value)
    assert "CONVEYOR_API_LISTEN" in named
    assert not any(n.startswith(("CONVEYOR_HEARTBEAT", "CONVEYOR_LEASE")) for n in named)


# ---- heartbeat vs visibility timeout and lease ----


@pytest.mark.parametrize(
    ("heartbeat", "visibility", "lease", "ok"),
    [
        ("10", "30", "30", True),  # exactly a third of both
        ("10.5", "30", "60", False),  # over a third of the visibility timeout
        ("5", "60", "15", True),  # exactly a third of the lease
        ("5.5", "60", "15", False),  # over a third of the lease
    ],
)
def test_heartbeat_must_fit_three_times_into_visibility_and_lease(
    env: SetEnv, heartbeat: str, visibility: str, lease: str, ok: bool
):
    env(
        **WORKER_BASE,
        CONVEYOR_HEARTBEAT_INTERVAL_SECONDS=heartbeat,
        CONVEYOR_VISIBILITY_TIMEOUT_SECONDS=visibility,
        CONVEYOR_LEASE_SECONDS=lease,
    )
    if ok:
        assert load(WorkerSettings).heartbeat_interval_seconds == float(heartbeat)
        return
    with pytest.raises(ConfigError) as caught:
        load(WorkerSettings)
    assert "CONVEYOR_HEARTBEAT_INTERVAL_SECONDS must be at most a third" in str(caught.value)


def test_heartbeat_too_long_for_both_names_both_limits(env: SetEnv):
    env(
        **WORKER_BASE,
        CONVEYOR_HEARTBEAT_INTERVAL_SECONDS="20",
        CONVEYOR_VISIBILITY_TIMEOUT_SECONDS="30",
        CONVEYOR_LEASE_SECONDS="30",
    )
    with pytest.raises(ConfigError) as caught:
        load(WorkerSettings)
    message = str(caught.value)
    assert "CONVEYOR_VISIBILITY_TIMEOUT_SECONDS" in message
    assert "CONVEYOR_LEASE_SECONDS" in message


# ---- TLS: exactly one source per part ----


def test_tls_from_files_or_inline_pem(env: SetEnv, tmp_path):
    for part in ("ca", "cert", "key"):
        (tmp_path / part).write_bytes(f"{part} from file".encode())
    env(
        CONVEYOR_TLS_CA_FILE=str(tmp_path / "ca"),
        CONVEYOR_TLS_CERT_PEM="cert inline",
        CONVEYOR_TLS_KEY_FILE=str(tmp_path / "key"),
    )
    tls = load(TlsSettings)
    assert tls.pem("ca") == b"ca from file"
    assert tls.pem("cert") == b"cert inline"
    assert tls.pem("key") == b"key from file"


def test_tls_with_no_source_names_every_part(env: SetEnv):
    with pytest.raises(ConfigError) as caught:
        load(TlsSettings)
    message = str(caught.value)
    for part in ("CA", "CERT", "KEY"):
        assert f"CONVEYOR_TLS_{part}_FILE and CONVEYOR_TLS_{part}_PEM" in message


def test_tls_with_both_sources_for_one_part_is_rejected(env: SetEnv):
    env(
        CONVEYOR_TLS_CA_FILE="/ca.pem",
        CONVEYOR_TLS_CERT_FILE="/cert.pem",
        CONVEYOR_TLS_CERT_PEM="inline",
        CONVEYOR_TLS_KEY_PEM="inline",
    )
    with pytest.raises(ConfigError) as caught:
        load(TlsSettings)
    message = str(caught.value)
    assert "CONVEYOR_TLS_CERT_FILE and CONVEYOR_TLS_CERT_PEM" in message
    assert "CONVEYOR_TLS_CA_FILE and" not in message
    assert "CONVEYOR_TLS_KEY_FILE and" not in message


@pytest.mark.parametrize(("grace", "stop_timeout", "ok"), [("26", "30", True), ("27", "30", False)])
def test_grace_and_hand_backs_must_fit_in_the_stop_timeout(
    env: SetEnv, grace: str, stop_timeout: str, ok: bool
):
    env(
        **WORKER_BASE,
        CONVEYOR_SHUTDOWN_GRACE_SECONDS=grace,
        CONVEYOR_STOP_TIMEOUT_SECONDS=stop_timeout,
    )
    if ok:
        settings = load(WorkerSettings)
        assert settings.shutdown_grace_seconds + HAND_BACK_SECONDS <= settings.stop_timeout_seconds
        return
    with pytest.raises(ConfigError, match="CONVEYOR_SHUTDOWN_GRACE_SECONDS must leave"):
        load(WorkerSettings)
