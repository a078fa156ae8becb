"""The trace gateway: one collector task that receives every sidecar's spans, tail-samples whole
traces and exports them to X-Ray. Sidecars find it by a Cloud Map DNS name in the VPC."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from conveyor_infra.config import StackConfig
from conveyor_infra.containers import trace_gateway_container
from conveyor_infra.ecs import fargate_task_definition
from conveyor_infra.iam import ServiceIam
from conveyor_infra.topology import OTLP_GRPC_PORT, TRACE_GATEWAY


def discovery_namespace(name_prefix: str) -> str:
    return f"{name_prefix}.internal"


def trace_gateway_endpoint(name_prefix: str) -> str:
    """host:port the sidecars export to; known before anything is created."""
    return f"{TRACE_GATEWAY}.{discovery_namespace(name_prefix)}:{OTLP_GRPC_PORT}"


@dataclass(frozen=True)
class TraceGatewayArgs:
    name_prefix: str
    config: StackConfig
    gateway_config: str
    cluster_arn: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    identity: ServiceIam
    log_group_name: pulumi.Input[str]
    # What its task needs to start (role policies, routes, endpoints, log group).
    start_dependencies: Sequence[pulumi.Resource]


class TraceGateway(pulumi.ComponentResource):
    """One replica on purpose: tail sampling needs every span of a trace in one process."""

    service: aws.ecs.Service

    def __init__(
        self, name: str, args: TraceGatewayArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("conveyor:observability:TraceGateway", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        namespace = aws.servicediscovery.PrivateDnsNamespace(
            f"{name}-namespace",
            name=discovery_namespace(args.name_prefix),
            description="Conveyor internal service discovery",
            vpc=args.vpc_id,
            opts=child,
        )
        discovery = aws.servicediscovery.Service(
            f"{name}-discovery",
            name=TRACE_GATEWAY,
            dns_config={
                "namespace_id": namespace.id,
                "dns_records": [{"type": "A", "ttl": 10}],
                "routing_policy": "MULTIVALUE",
            },
            opts=child,
        )
        task_definition = fargate_task_definition(
            f"{name}-task",
            family=f"{args.name_prefix}-{TRACE_GATEWAY}",
            size=args.config.trace_gateway,
            config=args.config,
            identity=args.identity,
            containers=pulumi.Output.json_dumps(
                [trace_gateway_container(args.config, args.gateway_config, args.log_group_name)]
            ),
            opts=child,
        )
        self.service = aws.ecs.Service(
            f"{name}-service",
            name=f"{args.name_prefix}-{TRACE_GATEWAY}",
            cluster=args.cluster_arn,
            task_definition=task_definition.arn,
            desired_count=1,
            launch_type="FARGATE",
            network_configuration={
                "subnets": list(args.subnet_ids),
                "security_groups": [args.security_group_id],
                "assign_public_ip": False,
            },
            service_registries={"registry_arn": discovery.arn},
            deployment_circuit_breaker={"enable": True, "rollback": True},
            wait_for_steady_state=True,
            enable_ecs_managed_tags=True,
            propagate_tags="SERVICE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.start_dependencies)),
        )
        self.register_outputs({"service_name": self.service.name})
