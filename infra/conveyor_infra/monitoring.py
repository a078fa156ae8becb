"""Where telemetry lands: a log group per service, and an Amazon Managed Prometheus workspace
with the generated recording/alerting rules and an Alertmanager that pages through SNS
(routing: conveyor_infra.alert_routing)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from conveyor_infra.alert_routing import amp_definition

# AMP rule group namespace names: 1-64 characters, letters, digits, '-', '.', '_'.
NAMESPACE_NAME = re.compile(r"^[0-9A-Za-z][-.0-9A-Z_a-z]{0,63}$")


def rule_files(directory: Path) -> list[Path]:
    """The Prometheus rule files the observability generator wrote, found at run time."""
    files = sorted(directory.glob("*.yaml"))
    bad = [f.name for f in files if not NAMESPACE_NAME.match(f.stem)]
    if bad:
        raise ValueError(
            f"rule files {bad} in {directory} cannot name an AMP rule group namespace "
            "(1-64 of A-Z a-z 0-9 - . _)"
        )
    return files


@dataclass(frozen=True)
class MonitoringArgs:
    name_prefix: str
    region: str
    services: Sequence[str]
    log_retention_days: int
    rule_files: Sequence[Path]
    alarm_topic_arn: pulumi.Input[str]


class Monitoring(pulumi.ComponentResource):
    log_groups: dict[str, aws.cloudwatch.LogGroup]
    workspace: aws.amp.Workspace

    def __init__(
        self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("conveyor:observability:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.log_groups = {
            service: aws.cloudwatch.LogGroup(
                f"{name}-{service}-logs",
                name=f"/ecs/{args.name_prefix}/{service}",
                retention_in_days=args.log_retention_days,
                opts=child,
            )
            for service in args.services
        }
        self.workspace = aws.amp.Workspace(f"{name}-prometheus", alias=args.name_prefix, opts=child)
        for path in args.rule_files:
            aws.amp.RuleGroupNamespace(
                f"{name}-rules-{path.stem}",
                name=path.stem,
                workspace_id=self.workspace.id,
                data=path.read_text(),
                opts=child,
            )
        aws.amp.AlertManagerDefinition(
            f"{name}-alertmanager",
            workspace_id=self.workspace.id,
            definition=pulumi.Output.from_input(args.alarm_topic_arn).apply(
                lambda arn: amp_definition(arn, args.region)
            ),
            opts=child,
        )
        self.register_outputs(
            {
                "workspace_id": self.workspace.id,
                "log_group_names": {s: g.name for s, g in self.log_groups.items()},
            }
        )

    @property
    def remote_write_url(self) -> pulumi.Output[str]:
        return self.workspace.prometheus_endpoint.apply(lambda url: f"{url}api/v1/remote_write")
