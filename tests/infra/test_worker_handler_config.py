"""The handlers' own configuration: `worker.env` reaches the worker container as plain variables,
`worker.secrets` as ECS `secrets` that only the worker's execution role may read."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conveyor_dev.emulators.declared import Declaration, declare
from conveyor_infra import policies
from conveyor_infra.config import config_problems
from stack_support import SERVICES, container, pairs, stack_file

ACCOUNT = "111111111111"  # Pulumi.dev.yaml's
SECRET_ARN = f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:invoice/api-key-AbC123"
ENV = {"INVOICE_SERVICE_URL": "https://invoices.example.com"}
SECRETS = {"INVOICE_API_KEY": SECRET_ARN, "INVOICE_SIGNING_PEM": "invoice/signing"}
# What each reference grants: the ARN as given; a name with Secrets Manager's six-char suffix.
GRANTED = [SECRET_ARN, f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:invoice/signing-??????"]


@pytest.fixture(scope="module")
def declaration() -> Declaration:
    worker = stack_file("dev")["conveyor:worker"] | {"env": ENV, "secrets": SECRETS}
    return declare("dev", {"conveyor:worker": json.dumps(worker)})


def _secret_grants(declaration: Declaration, policy: str) -> list[Any]:
    statements = json.loads(declaration.named(policy).inputs["policy"])["Statement"]
    return sorted(
        resource
        for statement in statements
        if "secretsmanager:GetSecretValue" in statement["Action"]
        for resource in statement["Resource"]
    )


def test_worker_env_and_secrets_reach_only_the_worker_container(declaration: Declaration) -> None:
    worker = container(declaration, "worker", "worker")
    assert pairs(worker["environment"]).items() >= ENV.items()
    assert pairs(worker["secrets"], "valueFrom") == SECRETS
    for service in set(SERVICES) - {"worker"}:
        app = container(declaration, service, service)
        assert ENV.keys().isdisjoint(pairs(app["environment"]))
        assert SECRETS.keys().isdisjoint(pairs(app.get("secrets", []), "valueFrom"))


def test_only_the_worker_execution_role_may_read_the_handler_secrets(
    declaration: Declaration,
) -> None:
    # ECS fetches container `secrets` with the task's execution role, before the code runs.
    assert _secret_grants(declaration, "worker-iam-execution-policy") == sorted(GRANTED)
    assert _secret_grants(declaration, "worker-iam-task-policy") == []
    for service in set(SERVICES) - {"worker"}:
        for kind in ("execution", "task"):
            granted = _secret_grants(declaration, f"{service}-iam-{kind}-policy")
            assert not set(GRANTED) & set(granted), f"{service} {kind} reads handler secrets"


def test_the_policy_pack_accepts_the_worker_and_refuses_a_secret_put_in_env(
    declaration: Declaration,
) -> None:
    task = declaration.named("ecs-worker-task")
    found: list[str] = []

    def check(props: dict[str, Any]) -> list[str]:
        found.clear()
        args = type(
            "Args",
            (),
            {"resource_type": task.type, "props": props, "urn": task.urn, "name": task.name},
        )()
        policies.no_secrets_in_container_environment(args, lambda m, _u=None: found.append(m))
        for policy in ("worker-iam-execution-policy", "worker-iam-task-policy"):
            assert policies.wildcard_problems(declaration.named(policy).inputs["policy"]) == []
        return list(found)

    assert check(dict(task.inputs)) == []
    leaked = json.loads(task.inputs["containerDefinitions"])
    leaked[0]["environment"].append({"name": "INVOICE_API_KEY", "value": "plain"})
    assert check({"containerDefinitions": json.dumps(leaked)}) != []


def test_every_bad_key_is_reported_in_one_pass_nested_rules_included() -> None:
    # Pydantic skips a model's own rules while one of its fields is bad: these used to come in
    # three rounds (fields, then worker's cpu and env/secrets clash, then the stack's rules).
    problems = config_problems(
        {
            "region": "",
            "tenants": ["Bad Tenant"],
            "image": "repo/conveyor:1",
            "availabilityZones": 5,
            "api": {"cpu": 256, "memory": 4096},
            "worker": {
                "minCount": 0,
                "cpu": 300,
                "env": {"invoice-url": "x", "CONVEYOR_LOG_LEVEL": "DEBUG", "SHARED": "a"},
                "secrets": {"SHARED": "invoice/shared", "BAD": "not a name"},
            },
            "dlqRetentionSeconds": 60,
        }
    )
    keys = [line.split(": ", 1)[0] for line in problems]
    assert keys == [
        "aws:region",
        "conveyor:tenants[0]",
        "conveyor:availabilityZones",
        "conveyor:api",
        "conveyor:worker.cpu",
        "conveyor:worker.minCount",
        "conveyor:worker.env.invoice-url",
        "conveyor:worker.env.CONVEYOR_LOG_LEVEL",
        "conveyor:worker.secrets.BAD",
        "conveyor:worker",  # SHARED in both env and secrets: checked once the fields pass
        "(stack configuration)",  # dlqRetentionSeconds: checked once every key passes
    ], problems
    assert "SHARED set in both env and secrets" in problems[-2]
    assert "dlqRetentionSeconds must be longer" in problems[-1]


def test_a_valid_config_has_no_problems() -> None:
    assert config_problems({"region": "eu-west-1", "tenants": ["acme"], "image": "r/c:1"}) == []
