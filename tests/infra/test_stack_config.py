"""Typed stack configuration: defaults, per-stack differences and one error for every bad key."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
from conveyor import settings
from conveyor.runtime import TaskRuntime
from conveyor_dev.emulators.declared import DeclarationError, declare
from conveyor_infra.config import StackConfig, stack_key
from pydantic import ValidationError
from stack_support import STACKS


def _config(**overrides: Any) -> StackConfig:
    return StackConfig.model_validate(
        {"region": "eu-west-1", "tenants": ["acme"], "image": "repo/conveyor:1", **overrides}
    )


def test_defaults_describe_a_small_single_nat_stack() -> None:
    config = _config()
    assert config.deploy_compute is True
    assert config.nat_gateways == "single"
    assert (config.visibility_timeout_seconds, config.heartbeat_interval_seconds) == (30, 10.0)
    assert config.default_max_attempts == 5
    assert config.allowed_api_cidrs() == [config.vpc_cidr]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"api": {"cpu": 256, "memory": 4096}}, "memory 4096 is not valid with cpu 256"),
        # Fargate offers 512, 1024 and 2048 MiB with 256 CPU units, not 1536 (cfn-lint E3047).
        ({"worker": {"cpu": 256, "memory": 1536}}, "memory 1536 is not valid with cpu 256"),
        ({"collectorMemory": 512}, "at most half the task memory of api, relay, worker"),
        ({"worker": {"minCount": 0}}, "greater than or equal to 1"),
        ({"heartbeatIntervalSeconds": 20}, "heartbeatIntervalSeconds must be at most a third of"),
        ({"dlqRetentionSeconds": 60}, "dlqRetentionSeconds must be longer"),
        ({"logRetentionDays": 10}, "must be one of"),
        ({"vpcCidr": "10.0.0.0/24"}, "between /16 and /22"),
        ({"tenants": ["Acme Corp"]}, "String should match pattern"),
        ({"tenants": ["acme", "acme"]}, "unique"),
        ({"image": None}, "conveyor:image is required"),
        ({"api": {"cpus": 256}}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_values_are_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _config(**overrides)


def test_a_data_plane_only_stack_needs_no_image() -> None:
    assert _config(image=None, deployCompute=False).image is None


def test_every_bad_key_is_listed_in_one_error_by_its_pulumi_name() -> None:
    with pytest.raises(DeclarationError) as failure:
        declare(
            "dev",
            {
                "aws:region": "",
                "conveyor:tenants": '["Bad Tenant"]',
                "conveyor:api": '{"cpu": 300, "memory": 512}',
                "conveyor:logRetentionDays": "8",
                "conveyor:natGateways": "two",
                "conveyor:maxAttempts": "many",
            },
        )
    message = str(failure.value)
    assert "invalid configuration for stack dev:" in message
    for key in (
        "aws:region:",
        "conveyor:tenants[0]:",
        "conveyor:api.cpu:",
        "conveyor:logRetentionDays:",
        "conveyor:natGateways:",
        "conveyor:maxAttempts:",
    ):
        assert key in message
    assert "Traceback" not in message


def test_an_unknown_key_is_reported_with_the_others_and_the_nearest_known_key() -> None:
    """A misspelt key would otherwise be ignored and its setting left at the default."""
    with pytest.raises(DeclarationError) as failure:
        declare(
            "dev",
            {
                "conveyor:wrker": '{"minCount": 3}',
                "conveyor:zzz": "1",
                "conveyor:natGateways": "two",
            },
        )
    message = str(failure.value)
    assert "conveyor:wrker: not a Conveyor stack key; did you mean conveyor:worker?" in message
    assert "conveyor:zzz: not a Conveyor stack key\n" in message + "\n"
    assert "conveyor:natGateways:" in message


def _worker_refusal(monkeypatch: pytest.MonkeyPatch, **knobs: str) -> str:
    """What a worker started with these knobs says, its variables named as stack keys."""
    for name in list(os.environ):
        if name.upper().startswith(("CONVEYOR_", "AWS_")):
            monkeypatch.delenv(name)
    environment = {
        "AWS_REGION": "eu-west-1",
        "CONVEYOR_TABLE_NAME": "tasks",
        "CONVEYOR_QUEUE_URL": "http://sqs/q.fifo",
        "CONVEYOR_DLQ_URL": "http://sqs/dlq.fifo",
        "CONVEYOR_QUEUE_URL_HIGH": "http://sqs/q-high.fifo",
        "CONVEYOR_DLQ_URL_HIGH": "http://sqs/dlq-high.fifo",
        "CONVEYOR_METRICS_LISTEN": ":9102",
        **{settings.env_name(field): value for field, value in knobs.items()},
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(settings.ConfigError) as refused:
        settings.load(settings.WorkerSettings)
    message = re.sub(r"^.*Value error, ", "", str(refused.value).splitlines()[-1])
    for field in TaskRuntime.model_fields:
        message = message.replace(settings.env_name(field), stack_key(field))
    return message


@pytest.mark.parametrize(
    "knobs",
    [
        {"heartbeat_interval_seconds": "20", "lease_seconds": "30"},
        {"shutdown_grace_seconds": "27", "stop_timeout_seconds": "30"},
        {"backoff_base_seconds": "90", "backoff_max_seconds": "60"},
    ],
    ids=["heartbeat", "grace", "backoff"],
)
def test_a_stack_the_worker_would_refuse_fails_at_config_load_with_the_workers_message(
    monkeypatch: pytest.MonkeyPatch, knobs: dict[str, str]
) -> None:
    said = _worker_refusal(monkeypatch, **knobs)
    with pytest.raises(DeclarationError) as refused:
        declare("dev", {f"conveyor:{stack_key(field)}": value for field, value in knobs.items()})
    assert "invalid configuration for stack dev:" in str(refused.value)
    assert f"(stack configuration): {said}" in str(refused.value)


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_file_is_valid_and_stacks_differ_where_it_matters(
    stack_files: dict[str, Any], stack: str
) -> None:
    config = stack_files[stack]
    keys = {key.split(":", 1)[1] for key in config if key.startswith("conveyor:")}
    StackConfig.model_validate(
        {"region": config["aws:region"], **{k: config[f"conveyor:{k}"] for k in keys}}
    )
    if stack == "prod":
        assert config["conveyor:natGateways"] == "per-az"
        assert config["conveyor:tableDeletionProtection"] is True
        assert config["conveyor:api"]["minCount"] >= 2
    if stack == "dev":
        assert config["conveyor:natGateways"] == "single"
        assert config["conveyor:tableDeletionProtection"] is False
    if stack == "localstack":
        endpoints = config["aws:endpoints"][0]
        assert {"sqs", "dynamodb", "secretsmanager", "sts"} <= set(endpoints)
        assert config["aws:skipCredentialsValidation"] is True
        assert config["aws:skipRequestingAccountId"] is True
        assert config["aws:s3UsePathStyle"] is True
