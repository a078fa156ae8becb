"""The CrossGuard validators pass on every resource of every stack, and each one fails on a
deliberately broken copy of a real declared resource.

Resources reach the validators through pulumi-policy's own argument classes and its
unknown-checking proxy, as `pulumi preview --policy-pack infra/policy` would hand them over.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
import pytest
from conveyor_dev.emulators.declared import Declaration, DeclaredResource
from conveyor_infra import policies
from conveyor_infra.paths import REPO_ROOT
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy
from stack_support import STACKS

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # Pulumi's unknown-string sentinel
Validator = Callable[[Any, Callable[..., None]], None]


def resource_args(resource: DeclaredResource, **changes: Any) -> ResourceValidationArgs:
    props = {**resource.inputs, **changes}
    return ResourceValidationArgs(
        resource.type,
        unknown_checking_proxy(props),
        resource.urn,
        resource.name,
        None,
        None,  # type: ignore[arg-type]
    )


def stack_args(
    declaration: Declaration, changes: Mapping[str, Mapping[str, Any]] | None = None
) -> StackValidationArgs:
    """Stack policies see outputs; `changes` maps a resource name to replaced output values."""
    changes = changes or {}
    resources = [
        PolicyResource(
            r.type,
            unknown_checking_proxy({**r.outputs, **changes.get(r.name, {})}),
            r.urn,
            r.name,
            None,  # type: ignore[arg-type]
            None,
            None,
            [],
            {},
        )
        for r in declaration
        if r.custom
    ]
    return StackValidationArgs(resources)


def violations(validator: Validator, args: Any) -> list[str]:
    found: list[str] = []
    validator(args, lambda message, urn=None: found.append(message))
    return found


RESOURCE_VALIDATORS = [validate for _, validate in policies.RESOURCE_VALIDATORS.values()]


def test_the_pack_holds_every_checklist_policy_as_mandatory() -> None:
    pack = {p.name: p for p in policies.policies()}
    assert set(pack) == {
        "fifo-queue-has-fifo-dlq",
        "dynamodb-on-demand-with-pitr",
        "iam-no-wildcards",
        "no-secrets-in-container-environment",
        "encryption-at-rest",
        "log-group-retention",
        "public-images-pinned-by-digest",
    }
    assert all(p.enforcement_level == EnforcementLevel.MANDATORY for p in pack.values())
    assert isinstance(pack["fifo-queue-has-fifo-dlq"], StackValidationPolicy)
    assert isinstance(pack["iam-no-wildcards"], ResourceValidationPolicy)


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_of_every_stack_passes_every_policy(
    declarations: dict[str, Declaration], stack: str
) -> None:
    declaration = declarations[stack]
    for resource in declaration:
        if resource.custom:
            for validate in RESOURCE_VALIDATORS:
                assert violations(validate, resource_args(resource)) == [], resource.name
    for _, validate in policies.STACK_VALIDATORS.values():
        assert violations(validate, stack_args(declaration)) == []


# ---- each policy fails on a broken resource ---------------------------------------------


@pytest.fixture(scope="module")
def prod(declarations: dict[str, Declaration]) -> Declaration:
    return declarations["prod"]


def test_fifo_dlq_policy_fails_without_redrive_or_with_a_standard_dlq(prod: Declaration) -> None:
    validate = policies.fifo_queues_have_fifo_dlq
    no_redrive = violations(validate, stack_args(prod, {"tasks-queue": {"redrivePolicy": ""}}))
    assert any("tasks-queue has no redrive policy" in v for v in no_redrive)
    standard_dlq = violations(validate, stack_args(prod, {"tasks-dlq": {"fifoQueue": False}}))
    assert standard_dlq == [
        "FIFO queue tasks-queue dead-letters to tasks-dlq, which is not FIFO "
        "(SQS requires a FIFO DLQ for a FIFO queue)"
    ]
    foreign = json.dumps({"deadLetterTargetArn": "arn:aws:sqs:eu-west-1:999999999999:x.fifo"})
    outside = violations(validate, stack_args(prod, {"tasks-queue": {"redrivePolicy": foreign}}))
    assert "FIFO queue tasks-queue dead-letters to a queue outside this stack" in outside
    # With no queue pointing at it any more, the old DLQ is itself an unprotected FIFO queue.
    assert any("tasks-dlq has no redrive policy" in v for v in outside)


def test_table_policy_fails_on_provisioned_capacity_or_without_pitr(prod: Declaration) -> None:
    table = prod.named("store-table")
    validate = policies.tables_on_demand_with_pitr
    assert violations(validate, resource_args(table, billingMode="PROVISIONED"))
    assert violations(validate, resource_args(table, pointInTimeRecovery={"enabled": False}))
    assert violations(validate, resource_args(table, pointInTimeRecovery=None))


def _with_statement(policy: DeclaredResource, statement: dict[str, Any]) -> ResourceValidationArgs:
    document = json.loads(policy.inputs["policy"])
    document["Statement"].append({"Sid": "Broken", "Effect": "Allow", **statement})
    return resource_args(policy, policy=json.dumps(document))


@pytest.mark.parametrize(
    "statement",
    [
        {"Action": ["sqs:*"], "Resource": ["arn:aws:sqs:eu-west-1:333333333333:q.fifo"]},
        {"Action": "dynamodb:Query", "Resource": "arn:aws:dynamodb:eu-west-1:1:table/t/index/*"},
        {"Action": ["dynamodb:GetItem"], "Resource": "*"},
        {"NotAction": ["iam:*"], "Resource": "*"},
        {"Action": ["sqs:SendMessage"], "NotResource": ["arn:aws:sqs:eu-west-1:1:q"]},
        {
            "Action": ["logs:DeleteLogStream"],
            "Resource": "arn:aws:logs:eu-west-1:333333333333:log-group:/ecs/x:log-stream:*",
        },
    ],
    ids=[
        "wildcard-action",
        "index-wildcard",
        "star-resource",
        "not-action",
        "not-resource",
        "log-stream-wildcard-for-other-action",
    ],
)
def test_iam_policy_fails_on_wildcards(prod: Declaration, statement: dict[str, Any]) -> None:
    policy = prod.named("worker-iam-task-policy")
    found = violations(policies.iam_policies_are_exact, _with_statement(policy, statement))
    assert len(found) >= 1 and all("Broken" in message for message in found)


def test_iam_policy_fails_on_inline_role_policies_and_aws_managed_attachments(
    prod: Declaration,
) -> None:
    role = prod.named("worker-iam-task")
    wildcard = json.dumps({"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})
    inline = resource_args(role, inlinePolicies=[{"name": "x", "policy": wildcard}])
    assert violations(policies.iam_policies_are_exact, inline)
    attachment = DeclaredResource(
        type=policies.POLICY_ATTACHMENT,
        name="admin",
        urn="urn:pulumi:prod::conveyor::aws:iam/rolePolicyAttachment:RolePolicyAttachment::admin",
        parent="",
        custom=True,
        inputs={"role": "r", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
        outputs={},
    )
    assert violations(policies.iam_policies_are_exact, resource_args(attachment))


LOG_STREAMS = "arn:aws:logs:eu-west-1:111111111111:log-group:/ecs/a:log-stream:*"


def test_the_documented_exceptions_are_the_only_wildcards_the_iam_policy_accepts() -> None:
    assert (
        policies.wildcard_problems(
            {
                "Statement": [
                    {"Effect": "Allow", "Action": ["xray:PutTraceSegments"], "Resource": "*"},
                    {
                        "Effect": "Allow",
                        "Action": ["logs:PutLogEvents"],
                        "Resource": LOG_STREAMS,
                    },
                    {"Effect": "Deny", "Action": "*", "Resource": "*"},
                ]
            }
        )
        == []
    )
    assert policies.wildcard_problems(
        {
            "Statement": {
                "Effect": "Allow",
                "Action": ["logs:PutLogEvents"],
                "Resource": "arn:aws:logs:eu-west-1:111111111111:log-group:*:log-stream:*",
            }
        }
    )


@pytest.mark.parametrize(
    "variable",
    [
        {"name": "DATABASE_PASSWORD", "value": "hunter2"},
        {"name": "CONVEYOR_TLS_KEY_PEM", "value": "anything"},
        {"name": "UPSTREAM_API_TOKEN", "value": "abc"},
        {"name": "CONVEYOR_TLS_CA", "value": "-----BEGIN CERTIFICATE-----\nMIIB..."},
        {"name": "AWS_ID", "value": "AKIAIOSFODNN7EXAMPLE"},
    ],
    ids=["password-name", "key-name", "token-name", "pem-value", "access-key-value"],
)
def test_environment_policy_fails_on_secret_looking_variables(
    prod: Declaration, variable: dict[str, str]
) -> None:
    task_definition = prod.named("ecs-worker-task")
    definitions = json.loads(task_definition.inputs["containerDefinitions"])
    definitions[0]["environment"].append(variable)
    broken = resource_args(task_definition, containerDefinitions=json.dumps(definitions))
    found = violations(policies.no_secrets_in_container_environment, broken)
    assert len(found) == 1 and variable["name"] in found[0]


def test_environment_policy_accepts_the_known_safe_names(prod: Declaration) -> None:
    task_definition = prod.named("ecs-api-task")
    definitions = json.loads(task_definition.inputs["containerDefinitions"])
    definitions[0]["environment"].append({"name": "CONVEYOR_TLS_KEY_FILE", "value": "/run/k"})
    fine = resource_args(task_definition, containerDefinitions=json.dumps(definitions))
    assert violations(policies.no_secrets_in_container_environment, fine) == []


@pytest.mark.parametrize(
    ("resource_name", "change"),
    [
        ("tasks-queue", {"sqsManagedSseEnabled": False}),
        ("tasks-dlq", {"sqsManagedSseEnabled": None}),
        ("store-table", {"serverSideEncryption": {"enabled": False}}),
        ("tls-server", {"kmsKeyId": None}),
        ("tls-secrets-key", {"enableKeyRotation": False}),
    ],
    ids=["queue", "dlq", "table", "secret", "kms-key"],
)
def test_encryption_policy_fails_on_unencrypted_resources(
    prod: Declaration, resource_name: str, change: dict[str, Any]
) -> None:
    broken = resource_args(prod.named(resource_name), **change)
    assert len(violations(policies.encrypted_at_rest, broken)) == 1


@pytest.mark.parametrize("retention", [None, 0])
def test_log_group_policy_fails_without_retention(prod: Declaration, retention: Any) -> None:
    broken = resource_args(prod.named("monitoring-api-logs"), retentionInDays=retention)
    assert violations(policies.log_groups_have_retention, broken)


def test_values_unknown_during_preview_are_reported_not_passed(prod: Declaration) -> None:
    """pulumi-policy turns UnknownValueError into "can't run during preview"; a validator
    must not treat an unknown as compliant."""
    with pytest.raises(UnknownValueError):
        violations(
            policies.tables_on_demand_with_pitr,
            resource_args(prod.named("store-table"), billingMode=UNKNOWN),
        )


# ---- the pack itself, over the protocol `pulumi preview --policy-pack` speaks ----------------


@pytest.fixture(scope="module")
def analyzer() -> Iterator[Any]:
    """infra/policy/__main__.py as the Pulumi CLI starts it: it prints its gRPC port."""
    pack = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "infra/policy/__main__.py")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT / "infra/policy",
    )
    try:
        assert pack.stdout is not None
        port = int(pack.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        pack.kill()
        pack.wait()


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(dict(values))
    return message


def test_the_pack_serves_all_policies_as_mandatory(analyzer: Any) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
    assert info.name == "conveyor"
    assert {p.name: p.enforcementLevel for p in info.policies} == {
        name: analyzer_pb2.MANDATORY
        for name in (*policies.RESOURCE_VALIDATORS, *policies.STACK_VALIDATORS)
    }


def test_the_pack_passes_the_declared_table_and_rejects_a_provisioned_one(
    analyzer: Any, prod: Declaration
) -> None:
    table = prod.named("store-table")

    def analyze(props: Mapping[str, Any]) -> list[tuple[str, int]]:
        request = analyzer_pb2.AnalyzeRequest(
            type=table.type, properties=_struct(props), urn=table.urn, name=table.name
        )
        response = analyzer.Analyze(request, timeout=30)
        return [(d.policyName, d.enforcementLevel) for d in response.diagnostics]

    assert analyze(table.inputs) == []
    assert analyze({**table.inputs, "billingMode": "PROVISIONED"}) == [
        ("dynamodb-on-demand-with-pitr", analyzer_pb2.MANDATORY)
    ]


def test_the_pack_rejects_a_stack_whose_dlq_is_not_fifo(analyzer: Any, prod: Declaration) -> None:
    def analyze_stack(dlq_is_fifo: bool) -> list[str]:
        resources = [
            analyzer_pb2.AnalyzerResource(
                type=q.type,
                properties=_struct(
                    {**q.outputs, "fifoQueue": dlq_is_fifo or q.name != "tasks-dlq"}
                ),
                urn=q.urn,
                name=q.name,
            )
            for q in prod.of_type(policies.QUEUE)
        ]
        response = analyzer.AnalyzeStack(
            analyzer_pb2.AnalyzeStackRequest(resources=resources), timeout=30
        )
        return [d.policyName for d in response.diagnostics]

    assert analyze_stack(dlq_is_fifo=True) == []
    assert analyze_stack(dlq_is_fifo=False) == ["fifo-queue-has-fifo-dlq"]


def test_image_policy_fails_on_a_public_image_pinned_only_by_tag(prod: Declaration) -> None:
    task = prod.named("ecs-worker-task")
    containers = json.loads(task.inputs["containerDefinitions"])
    assert violations(policies.public_images_pinned_by_digest, resource_args(task)) == []
    containers[1]["image"] = "otel/opentelemetry-collector-contrib:0.114.0"
    found = violations(
        policies.public_images_pinned_by_digest,
        resource_args(task, containerDefinitions=json.dumps(containers)),
    )
    assert found == [
        "container otel-collector of ecs-worker-task uses "
        "otel/opentelemetry-collector-contrib:0.114.0, which is not pinned by digest "
        "(image@sha256:...)"
    ]
    # The service image lives in the account's ECR, where a tag is the team's own.
    assert containers[0]["image"].endswith(".amazonaws.com/conveyor:0.1.0")
