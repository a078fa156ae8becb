"""IAM: every role policy names only this stack's own ARNs, and each service gets exactly the
actions its code calls."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conveyor import schema
from conveyor.domain import LANES
from conveyor_dev.emulators.declared import Declaration
from conveyor_infra.config import secret_resource
from conveyor_infra.permissions import STAR_ONLY_ACTIONS, ecr_repository_arn
from conveyor_infra.task_queue import task_queue_name
from conveyor_infra.topology import TRACE_GATEWAY
from stack_support import COMPUTE_STACKS, SERVICES, stack_config, stack_file

ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"

IDENTITIES = (*SERVICES, TRACE_GATEWAY)
TABLE = {(f"dynamodb:{a}", "table") for a in ("GetItem", "PutItem", "UpdateItem")}


def _every_lane(action: str, kind: str) -> set[tuple[str, str]]:
    """`action` on every priority lane's queue (kind "queue") or DLQ ("dlq")."""
    return {(action, f"{kind}:{lane}") for lane in LANES}


TASK_ROLE_GRANTS = {
    "api": TABLE
    | {
        ("dynamodb:Query", "table"),  # a task and its payload
        ("dynamodb:Query", "index/by_tenant"),
        ("dynamodb:Query", "index/queued"),  # admission: a tenant's backlog
        ("dynamodb:BatchGetItem", "table"),  # the task items of a listed page
        ("dynamodb:DeleteItem", "table"),  # DeleteSchedule
        *_every_lane("sqs:SendMessage", "queue"),
        ("aps:RemoteWrite", "workspace"),
    },
    "relay": TABLE  # UpdateItem: transitions; GetItem, PutItem: firing a schedule's slot
    | {
        ("dynamodb:Query", "table"),  # a task and its payload
        ("dynamodb:Query", "index/outbox"),
        ("dynamodb:BatchGetItem", "table"),  # the due delayed tasks, a hundred at a time
        *_every_lane("sqs:SendMessage", "queue"),
        *_every_lane("sqs:GetQueueAttributes", "queue"),
        *_every_lane("sqs:GetQueueAttributes", "dlq"),
        # The DLQ compensator: peek (receive, then unhide), re-file (send, delete).
        *_every_lane("sqs:ReceiveMessage", "dlq"),
        *_every_lane("sqs:ChangeMessageVisibility", "dlq"),
        *_every_lane("sqs:SendMessage", "dlq"),
        *_every_lane("sqs:DeleteMessage", "dlq"),
        ("aps:RemoteWrite", "workspace"),
    },
    "worker": TABLE
    | {
        ("dynamodb:Query", "table"),  # a task and its payload
        *_every_lane("sqs:ReceiveMessage", "queue"),
        *_every_lane("sqs:DeleteMessage", "queue"),
        *_every_lane("sqs:ChangeMessageVisibility", "queue"),
        *_every_lane("sqs:SendMessage", "queue"),  # a message replaced to keep its receives
        *_every_lane("sqs:SendMessage", "dlq"),
        ("aps:RemoteWrite", "workspace"),
    },
    # Only the gateway exports traces; the sidecars send them to it.
    TRACE_GATEWAY: {("xray:PutTraceSegments", "*"), ("xray:PutTelemetryRecords", "*")},
}


def _document(declaration: Declaration, name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(declaration.named(name).inputs["policy"])
    return document


def _grants(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (action, resource)
        for statement in document["Statement"]
        for action in statement["Action"]
        for resource in statement["Resource"]
    }


def _worker_secrets(stack: str, account: str) -> dict[str, str]:
    """The IAM resource of each secret the stack file gives the worker -> `secret:<variable>`."""
    config = stack_config(stack)
    return {
        secret_resource(reference, config.region, account): f"secret:{variable}"
        for variable, reference in config.worker.secrets.items()
    }


def _own_arns(declaration: Declaration, stack: str) -> dict[str, str]:
    """ARN -> symbolic name, for every ARN this stack owns or may legitimately name."""
    image = stack_file(stack)["conveyor:image"]
    table = declaration.named("store-table").outputs["arn"]
    arns = {
        table: "table",
        **{
            declaration.named(f"{task_queue_name(lane)}-{kind}").outputs["arn"]: f"{kind}:{lane}"
            for lane in LANES
            for kind in ("queue", "dlq")
        },
        declaration.named("monitoring-prometheus").outputs["arn"]: "workspace",
        declaration.named("tls-server").outputs["arn"]: "server-secret",
        declaration.named("tls-secrets-key").outputs["arn"]: "secrets-key",
        str(ecr_repository_arn(image)): "repository",
        "*": "*",
    }
    for index_name, *_ in schema.GLOBAL_SECONDARY_INDEXES:
        arns[f"{table}/index/{index_name}"] = f"index/{index_name}"
    for service in IDENTITIES:
        log_group = declaration.named(f"monitoring-{service}-logs").outputs["arn"]
        arns[f"{log_group}:log-stream:*"] = f"logs/{service}"
    return arns | _worker_secrets(stack, stack_file(stack)["aws:allowedAccountIds"][0])


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
def test_role_policies_name_only_this_stacks_arns(
    declarations: dict[str, Declaration], stack_files: dict[str, Any], stack: str
) -> None:
    declaration = declarations[stack]
    own = _own_arns(declaration, stack)
    account = stack_files[stack]["aws:allowedAccountIds"][0]
    policies = declaration.of_type(ROLE_POLICY)
    assert len(policies) == 2 * len(IDENTITIES)
    for policy in policies:
        for action, resource in _grants(json.loads(policy.inputs["policy"])):
            assert resource in own, f"{policy.name} grants {action} on foreign {resource}"
            if resource == "*":
                assert action in STAR_ONLY_ACTIONS
            else:
                assert resource.split(":")[4] == account


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
@pytest.mark.parametrize("service", IDENTITIES)
def test_each_task_role_gets_exactly_the_calls_its_service_makes(
    declarations: dict[str, Declaration], stack_files: dict[str, Any], stack: str, service: str
) -> None:
    declaration = declarations[stack]
    own = _own_arns(declaration, stack)
    grants = _grants(_document(declaration, f"{service}-iam-task-policy"))
    assert {(action, own[resource]) for action, resource in grants} == TASK_ROLE_GRANTS[service]


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
@pytest.mark.parametrize("service", IDENTITIES)
def test_execution_roles_pull_the_image_ship_logs_and_only_the_api_reads_tls(
    declarations: dict[str, Declaration], stack_files: dict[str, Any], stack: str, service: str
) -> None:
    declaration = declarations[stack]
    own = _own_arns(declaration, stack)
    document = _document(declaration, f"{service}-iam-execution-policy")
    grants = {(action, own[resource]) for action, resource in _grants(document)}
    expected = {
        ("logs:CreateLogStream", f"logs/{service}"),
        ("logs:PutLogEvents", f"logs/{service}"),
    }
    if service != TRACE_GATEWAY:  # the gateway runs only the (ECR Public) collector image
        expected |= {
            ("ecr:GetAuthorizationToken", "*"),
            ("ecr:BatchCheckLayerAvailability", "repository"),
            ("ecr:GetDownloadUrlForLayer", "repository"),
            ("ecr:BatchGetImage", "repository"),
        }
    if service == "worker":  # ECS injects the handlers' secrets with the execution role
        account = stack_files[stack]["aws:allowedAccountIds"][0]
        expected |= {
            ("secretsmanager:GetSecretValue", symbol)
            for symbol in _worker_secrets(stack, account).values()
        }
    if service == "api":
        expected |= {
            ("secretsmanager:GetSecretValue", "server-secret"),
            ("kms:Decrypt", "secrets-key"),
        }
        (key_statement,) = [s for s in document["Statement"] if s["Sid"] == "SecretsKey"]
        assert key_statement["Condition"] == {
            "StringEquals": {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}
        }
    assert grants == expected


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
def test_only_ecs_tasks_of_this_account_can_assume_the_roles(
    declarations: dict[str, Declaration], stack_files: dict[str, Any], stack: str
) -> None:
    account = stack_files[stack]["aws:allowedAccountIds"][0]
    roles = declarations[stack].of_type("aws:iam/role:Role")
    assert sorted(r.inputs["name"] for r in roles) == sorted(
        f"conveyor-{stack}-{service}-{kind}"
        for service in IDENTITIES
        for kind in ("execution", "task")
    )
    for role in roles:
        (statement,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
        assert statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
        assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": account}
