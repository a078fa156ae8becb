"""What each service may do, as IAM statements: exact actions on exact ARNs.

The action lists follow the AWS calls the services make (conveyor.store, conveyor.queue):
TransactWriteItems is authorised per item, so Put/Update in a transaction need PutItem and
UpdateItem. Indexes are granted by their exact ARN (`<table>/index/<name>`), never `index/*`.
Values may be Pulumi Inputs; `iam.py` turns the documents into JSON.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor_infra.topology import TRACE_GATEWAY

# Actions AWS authorises only on Resource "*": the one documented exception to exact resources.
STAR_ONLY_ACTIONS = frozenset(
    {
        "ecr:GetAuthorizationToken",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
    }
)
# ECS names log streams per task, so the execution role can only name its log group exactly.
LOG_STREAM_ACTIONS = frozenset({"logs:CreateLogStream", "logs:PutLogEvents"})
LOG_STREAM_SUFFIX = ":log-stream:*"

# Item reads and writes (transactions are authorised per item); only the API queries the
# table itself (a task with its history, GetTask).
ITEM_ACTIONS = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
TRACE_ACTIONS = ["xray:PutTelemetryRecords", "xray:PutTraceSegments"]
IMAGE_PULL_ACTIONS = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchGetImage",
]
ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repository>[^:@]+)"
)


@dataclass(frozen=True)
class DataPlaneArns:
    table: Any
    by_tenant_index: Any
    outbox_index: Any
    queued_index: Any
    queues: Sequence[Any]  # every lane's task queue
    dlqs: Sequence[Any]  # every lane's DLQ
    prometheus_workspace: Any


def _allow(sid: str, actions: Sequence[str], resources: Sequence[Any]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": list(actions), "Resource": list(resources)}


def document(statements: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def task_role_statements(service: str, arns: DataPlaneArns) -> list[dict[str, Any]]:
    """A service's own permissions plus its collector sidecar's (AMP); the trace gateway's."""
    if service == TRACE_GATEWAY:
        return [_allow("Traces", TRACE_ACTIONS, ["*"])]
    own: dict[str, list[dict[str, Any]]] = {
        "api": [
            # BatchGetItem: a listing reads the task items of each page of the by_tenant index.
            # DeleteItem: DeleteSchedule (no task item is ever deleted).
            _allow(
                "TaskTable",
                [*ITEM_ACTIONS, "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:DeleteItem"],
                [arns.table],
            ),
            _allow("ListByTenant", ["dynamodb:Query"], [arns.by_tenant_index]),
            # Admission reads a tenant's backlog: its oldest unfinished task and their count.
            _allow("TenantBacklog", ["dynamodb:Query"], [arns.queued_index]),
            _allow("Enqueue", ["sqs:SendMessage"], list(arns.queues)),
        ],
        "relay": [
            # It reads a task (one Query of its items) and moves it on; it creates items only to
            # fire a schedule's slot (a submit's transaction), after reading the schedule.
            # BatchGetItem: it reads the due delayed tasks a hundred at a time.
            _allow(
                "TaskItems",
                [*ITEM_ACTIONS, "dynamodb:Query", "dynamodb:BatchGetItem"],
                [arns.table],
            ),
            _allow("OutboxMarks", ["dynamodb:Query"], [arns.outbox_index]),
            _allow("Enqueue", ["sqs:SendMessage"], list(arns.queues)),
            _allow("QueueDepths", ["sqs:GetQueueAttributes"], [*arns.queues, *arns.dlqs]),
            # The DLQ compensator peeks (hides, then unhides), marks stranded tasks DEAD and
            # re-files their messages under the task's own group (send, then delete).
            _allow(
                "DlqCompensation",
                [
                    "sqs:ReceiveMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:SendMessage",
                    "sqs:DeleteMessage",
                ],
                list(arns.dlqs),
            ),
        ],
        "worker": [
            _allow("TaskItems", [*ITEM_ACTIONS, "dynamodb:Query"], [arns.table]),
            _allow(
                "Consume",
                ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"],
                list(arns.queues),
            ),
            # SendMessage on the task queues: a message whose receives cannot cover the task's
            # attempts left is replaced by a new one (conveyor.tasks.lifecycle `_replace`).
            _allow("Replace", ["sqs:SendMessage"], list(arns.queues)),
            _allow("DeadLetter", ["sqs:SendMessage"], list(arns.dlqs)),
        ],
    }
    return [
        *own[service],
        _allow("PrometheusRemoteWrite", ["aps:RemoteWrite"], [arns.prometheus_workspace]),
    ]


def ecr_repository_arn(image: str) -> str | None:
    """The ECR repository an image URI points at, or None for other registries."""
    match = ECR_IMAGE.match(image)
    if match is None:
        return None
    partition = "aws-cn" if ".amazonaws.com.cn/" in image else "aws"
    return (
        f"arn:{partition}:ecr:{match['region']}:{match['account']}:repository/{match['repository']}"
    )


def execution_role_statements(
    region: str,
    images: Sequence[str],
    log_group_arn: Any,
    secret_arns: Sequence[Any] = (),
    secrets_key_arn: Any = None,
) -> list[dict[str, Any]]:
    """What ECS needs to start the task: pull its images, ship its logs, inject its secrets."""
    repositories = sorted({arn for arn in map(ecr_repository_arn, images) if arn})
    statements = []
    if repositories:
        statements += [
            _allow("EcrLogin", ["ecr:GetAuthorizationToken"], ["*"]),
            _allow("PullImages", IMAGE_PULL_ACTIONS, repositories),
        ]
    log_streams = [log_group_arn.apply(lambda arn: f"{arn}{LOG_STREAM_SUFFIX}")]
    statements.append(_allow("Logs", sorted(LOG_STREAM_ACTIONS), log_streams))
    if secret_arns:
        statements.append(_allow("Secrets", ["secretsmanager:GetSecretValue"], secret_arns))
    if secret_arns and secrets_key_arn is not None:
        # The key only decrypts on Secrets Manager's behalf, not for direct kms:Decrypt calls.
        key = _allow("SecretsKey", ["kms:Decrypt"], [secrets_key_arn])
        key["Condition"] = {
            "StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}
        }
        statements.append(key)
    return statements


# Which IAM action prefix each VPC endpoint carries (ECR's API and registry endpoints both
# authorise as `ecr:`); S3 carries only ECR's image layers.
ENDPOINT_ACTION_PREFIXES = {
    "sqs": "sqs:",
    "secretsmanager": "secretsmanager:",
    "ecr.api": "ecr:",
    "ecr.dkr": "ecr:",
    "logs": "logs:",
    "dynamodb": "dynamodb:",
}


def ecr_layer_bucket_arn(region: str) -> str:
    """Where ECR serves image layers from (AWS's documented S3 endpoint policy for ECR)."""
    return f"arn:aws:s3:::prod-{region}-starport-layer-bucket/*"


def _sid(*parts: str) -> str:
    return "".join(re.sub(r"[^A-Za-z0-9]", "", p.title()) for p in parts)


def endpoint_policy_documents(
    region: str,
    account_id: Any,
    role_statements: Mapping[str, Sequence[dict[str, Any]]],
) -> dict[str, dict[str, Any]]:
    """One endpoint policy per VPC endpoint: exactly the grants of this stack's roles
    (`role_statements`: role label -> statements) for that endpoint's service, for principals
    of this account; the S3 endpoint only lets ECR image layers through."""
    documents: dict[str, dict[str, Any]] = {}
    for endpoint, prefix in ENDPOINT_ACTION_PREFIXES.items():
        statements = []
        for role, role_grants in sorted(role_statements.items()):
            for grant in role_grants:
                actions = [a for a in grant["Action"] if a.startswith(prefix)]
                if not actions:
                    continue
                statement = _allow(_sid(role, grant["Sid"]), actions, grant["Resource"])
                statement["Principal"] = "*"
                statement["Condition"] = {"StringEquals": {"aws:PrincipalAccount": account_id}}
                statements.append(statement)
        documents[endpoint] = document(statements)
    layers = _allow("EcrImageLayers", ["s3:GetObject"], [ecr_layer_bucket_arn(region)])
    layers["Principal"] = "*"
    documents["s3"] = document([layers])
    return documents
