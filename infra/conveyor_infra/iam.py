"""One service's IAM identity: an execution role (what ECS does to start the task) and a task
role (what the code and its sidecar do), each with one inline policy from `permissions`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from conveyor_infra.permissions import document


@dataclass(frozen=True)
class ServiceIamArgs:
    name_prefix: str
    service: str
    account_id: pulumi.Input[str]
    region: str
    task_statements: Sequence[dict[str, Any]]
    execution_statements: Sequence[dict[str, Any]]


def ecs_tasks_trust_policy(account_id: pulumi.Input[str], region: str) -> pulumi.Output[str]:
    """Only ECS tasks of this account and region may assume the role (confused deputy guard)."""
    return pulumi.Output.json_dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                    "Condition": {
                        "StringEquals": {"aws:SourceAccount": account_id},
                        "ArnLike": {
                            "aws:SourceArn": pulumi.Output.concat(
                                "arn:aws:ecs:", region, ":", account_id, ":*"
                            )
                        },
                    },
                }
            ],
        }
    )


class ServiceIam(pulumi.ComponentResource):
    execution_role: aws.iam.Role
    task_role: aws.iam.Role
    # A task started before its roles' policies exist cannot pull, log or read its secrets.
    policies: list[aws.iam.RolePolicy]

    def __init__(
        self, name: str, args: ServiceIamArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("conveyor:security:ServiceIam", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        trust = ecs_tasks_trust_policy(args.account_id, args.region)
        roles = {}
        self.policies = []
        for kind, statements in (
            ("execution", args.execution_statements),
            ("task", args.task_statements),
        ):
            role_name = f"{args.name_prefix}-{args.service}-{kind}"
            role = aws.iam.Role(
                f"{name}-{kind}",
                name=role_name,
                description=f"Conveyor {args.service}: {kind} role",
                assume_role_policy=trust,
                opts=child,
            )
            policy = aws.iam.RolePolicy(
                f"{name}-{kind}-policy",
                name=role_name,
                role=role.name,
                policy=pulumi.Output.json_dumps(document(statements)),
                opts=child,
            )
            roles[kind] = role
            self.policies.append(policy)
        self.execution_role = roles["execution"]
        self.task_role = roles["task"]
        self.register_outputs(
            {"execution_role_arn": self.execution_role.arn, "task_role_arn": self.task_role.arn}
        )
