"""The architecture review checklist as CrossGuard policies (pack: infra/policy).

Each validator has pulumi-policy's signature `(args, report_violation)` and reads only
`args.resource_type`, `args.props`, `args.urn`, `args.name` (or `args.resources` for stack
policies), so tests can call it on the mocked resources without starting a policy server.
Props arrive as Mapping/Sequence proxies, never as dict/list: the checks stick to those ABCs.
Resource policies see inputs; the stack policy sees outputs (it needs the queues' ARNs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from conveyor_infra.permissions import (
    ECR_IMAGE,
    LOG_STREAM_ACTIONS,
    LOG_STREAM_SUFFIX,
    STAR_ONLY_ACTIONS,
)

QUEUE = "aws:sqs/queue:Queue"
TABLE = "aws:dynamodb/table:Table"
SECRET = "aws:secretsmanager/secret:Secret"
KMS_KEY = "aws:kms/key:Key"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
MANAGED_POLICY = "aws:iam/policy:Policy"
POLICY_ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"

SECRET_NAME_PARTS = ("SECRET", "PASSWORD", "PASSWD", "TOKEN", "KEY", "CREDENTIAL", "PRIVATE")
# Names that match SECRET_NAME_PARTS but hold no secret, each with its reason.
SAFE_ENVIRONMENT_NAMES = {
    "CONVEYOR_TLS_KEY_FILE": "a path to the key file, not the key",
    "AWS_ACCESS_KEY_ID_FILE": "a path, not a credential",
}
SECRET_VALUE_PATTERNS = (
    re.compile(r"-----BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)-----"),
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
)
LOG_STREAMS_OF_ONE_GROUP = re.compile(
    r"^arn:[\w-]+:logs:[\w-]+:\d{12}:log-group:[^*]+" + re.escape(LOG_STREAM_SUFFIX) + "$"
)


def _items(value: Any) -> list[Any]:
    """A JSON-policy field that may be one value or a list of them."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        return [value]
    return list(value)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


# ---- SQS: every FIFO queue dead-letters into a FIFO DLQ --------------------------------


def fifo_queues_have_fifo_dlq(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    queues = [r for r in args.resources if r.resource_type == QUEUE]
    by_arn = {q.props.get("arn"): q for q in queues}
    redrive_targets = {
        _json(q.props["redrivePolicy"]).get("deadLetterTargetArn")
        for q in queues
        if q.props.get("redrivePolicy")
    }
    for queue in queues:
        if not queue.props.get("fifoQueue") or queue.props.get("arn") in redrive_targets:
            continue  # a standard queue, or itself a DLQ
        redrive = queue.props.get("redrivePolicy")
        if not redrive:
            report_violation(
                f"FIFO queue {queue.name} has no redrive policy: a poison message would be "
                "retried until it expires and block its message group",
                queue.urn,
            )
            continue
        target = by_arn.get(_json(redrive).get("deadLetterTargetArn"))
        if target is None:
            report_violation(
                f"FIFO queue {queue.name} dead-letters to a queue outside this stack", queue.urn
            )
        elif not target.props.get("fifoQueue"):
            report_violation(
                f"FIFO queue {queue.name} dead-letters to {target.name}, which is not FIFO "
                "(SQS requires a FIFO DLQ for a FIFO queue)",
                queue.urn,
            )


# ---- DynamoDB: on-demand capacity and point-in-time recovery ---------------------------


def tables_on_demand_with_pitr(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    if args.resource_type != TABLE:
        return
    if args.props.get("billingMode") != "PAY_PER_REQUEST":
        report_violation(
            f"table {args.name} must use billingMode PAY_PER_REQUEST (on demand)", args.urn
        )
    pitr = args.props.get("pointInTimeRecovery") or {}
    if not pitr.get("enabled"):
        report_violation(f"table {args.name} must enable point-in-time recovery", args.urn)


# ---- IAM: no wildcard actions or resources ------------------------------------------------


def wildcard_problems(policy_document: Any) -> list[str]:
    """What a policy document allows too broadly; empty if every grant is exact."""
    problems = []
    for index, statement in enumerate(_items(_json(policy_document).get("Statement"))):
        if statement.get("Effect") != "Allow":
            continue
        label = statement.get("Sid") or f"statement {index}"
        if "NotAction" in statement or "NotResource" in statement:
            problems.append(f"{label}: NotAction/NotResource grant everything not listed")
        actions = {str(a) for a in _items(statement.get("Action"))}
        for action in sorted(a for a in actions if "*" in a):
            problems.append(f"{label}: wildcard action {action}")
        for resource in (str(r) for r in _items(statement.get("Resource"))):
            if "*" not in resource:
                continue
            if resource == "*" and actions <= STAR_ONLY_ACTIONS:
                continue  # AWS grants these actions only on "*"
            if actions <= LOG_STREAM_ACTIONS and LOG_STREAMS_OF_ONE_GROUP.match(resource):
                continue  # ECS names a task's log stream; the log group is exact
            problems.append(f"{label}: wildcard resource {resource} for {sorted(actions)}")
    return problems


def iam_policies_are_exact(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    documents: list[Any] = []
    if args.resource_type in (ROLE_POLICY, MANAGED_POLICY):
        documents.append(args.props.get("policy"))
    elif args.resource_type == ROLE:
        documents += [p.get("policy") for p in _items(args.props.get("inlinePolicies"))]
    elif args.resource_type == POLICY_ATTACHMENT:
        arn = str(args.props.get("policyArn", ""))
        if ":iam::aws:policy/" in arn:
            report_violation(
                f"{args.name} attaches the AWS-managed policy {arn}: its grants are not exact; "
                "write an inline policy with the actions and ARNs the service uses",
                args.urn,
            )
        return
    for document in filter(None, documents):
        for problem in wildcard_problems(document):
            report_violation(f"{args.name}: {problem}", args.urn)


# ---- ECS: no secrets in container environment -------------------------------------------


def secret_looking_variables(environment: Iterable[Mapping[str, Any]]) -> list[str]:
    found = []
    for variable in environment:
        name = str(variable.get("name", ""))
        value = str(variable.get("value", ""))
        if name not in SAFE_ENVIRONMENT_NAMES and any(
            part in name.upper() for part in SECRET_NAME_PARTS
        ):
            found.append(f"{name} (name suggests a secret)")
        elif any(pattern.search(value) for pattern in SECRET_VALUE_PATTERNS):
            found.append(f"{name} (value looks like key material or an access key)")
    return found


def no_secrets_in_container_environment(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    if args.resource_type != TASK_DEFINITION:
        return
    for container in _items(_json(args.props.get("containerDefinitions", "[]"))):
        for finding in secret_looking_variables(_items(container.get("environment"))):
            report_violation(
                f"container {container.get('name')} of {args.name} has {finding} in "
                "`environment`: inject it with `secrets` (valueFrom Secrets Manager)",
                args.urn,
            )


# ---- Images: anything not from a private ECR registry is pinned by digest ----------------

PINNED_IMAGE = re.compile(r"@sha256:[0-9a-f]{64}$")


def public_images_pinned_by_digest(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    """A tag in someone else's registry can move under a running stack; a digest cannot. Images
    in the account's own ECR may use a tag (make the repository's tags immutable)."""
    if args.resource_type != TASK_DEFINITION:
        return
    for container in _items(_json(args.props.get("containerDefinitions", "[]"))):
        image = str(container.get("image", ""))
        if ECR_IMAGE.match(image) is None and PINNED_IMAGE.search(image) is None:
            report_violation(
                f"container {container.get('name')} of {args.name} uses {image}, which is not "
                "pinned by digest (image@sha256:...)",
                args.urn,
            )


# ---- Encryption at rest ---------------------------------------------------------------------


def encrypted_at_rest(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    props = args.props
    if args.resource_type == QUEUE:
        if not (props.get("sqsManagedSseEnabled") or props.get("kmsMasterKeyId")):
            report_violation(f"queue {args.name} must enable SSE (SQS-managed or KMS)", args.urn)
    elif args.resource_type == TABLE:
        if not (props.get("serverSideEncryption") or {}).get("enabled"):
            report_violation(f"table {args.name} must enable serverSideEncryption (KMS)", args.urn)
    elif args.resource_type == SECRET:
        if not props.get("kmsKeyId"):
            report_violation(
                f"secret {args.name} must be encrypted with a customer-managed KMS key (kmsKeyId)",
                args.urn,
            )
    elif args.resource_type == KMS_KEY and not props.get("enableKeyRotation"):
        report_violation(f"KMS key {args.name} must enable automatic key rotation", args.urn)


# ---- Logs ---------------------------------------------------------------------------------------


def log_groups_have_retention(
    args: ResourceValidationArgs, report_violation: ReportViolation
) -> None:
    if args.resource_type != LOG_GROUP:
        return
    retention = args.props.get("retentionInDays")
    if not (isinstance(retention, int | float) and retention > 0):
        report_violation(
            f"log group {args.name} must set retentionInDays (logs never expire)", args.urn
        )


RESOURCE_VALIDATORS = {
    "dynamodb-on-demand-with-pitr": (
        "DynamoDB tables use on-demand capacity and point-in-time recovery.",
        tables_on_demand_with_pitr,
    ),
    "iam-no-wildcards": (
        "IAM policies grant exact actions on exact ARNs; '*' only for actions AWS grants on '*'.",
        iam_policies_are_exact,
    ),
    "no-secrets-in-container-environment": (
        "Secrets reach containers through `secrets` (valueFrom), never `environment`.",
        no_secrets_in_container_environment,
    ),
    "public-images-pinned-by-digest": (
        "Container images from outside the account's ECR are pinned by digest.",
        public_images_pinned_by_digest,
    ),
    "encryption-at-rest": (
        "SQS, DynamoDB and Secrets Manager encrypt at rest; KMS keys rotate.",
        encrypted_at_rest,
    ),
    "log-group-retention": (
        "Log groups set a retention period.",
        log_groups_have_retention,
    ),
}
STACK_VALIDATORS = {
    "fifo-queue-has-fifo-dlq": (
        "Every FIFO queue redrives into a FIFO dead-letter queue of the same stack.",
        fifo_queues_have_fifo_dlq,
    ),
}


def policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
    """The policy objects of the pack, all mandatory."""
    resource = [
        ResourceValidationPolicy(
            name=name,
            description=description,
            validate=validate,
            enforcement_level=EnforcementLevel.MANDATORY,
        )
        for name, (description, validate) in RESOURCE_VALIDATORS.items()
    ]
    stack = [
        StackValidationPolicy(
            name=name,
            description=description,
            validate=validate,
            enforcement_level=EnforcementLevel.MANDATORY,
        )
        for name, (description, validate) in STACK_VALIDATORS.items()
    ]
    return [*resource, *stack]
