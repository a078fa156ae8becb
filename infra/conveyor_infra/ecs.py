"""The ECS cluster and one Fargate service per process: api, relay and worker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from conveyor_infra.config import StackConfig, TaskSize
from conveyor_infra.containers import SCRATCH_VOLUME, DataPlaneRefs, TaskContainers
from conveyor_infra.iam import ServiceIam
from conveyor_infra.topology import SERVICES

# Autoscaling owns these services' desired count once they exist.
AUTOSCALED = ("api", "worker")


@dataclass(frozen=True)
class EcsServicesArgs:
    name_prefix: str
    config: StackConfig
    refs: DataPlaneRefs
    collector_config: str
    log_group_names: Mapping[str, pulumi.Input[str]]
    remote_write_url: pulumi.Input[str]
    trace_gateway_endpoint: str
    identities: Mapping[str, ServiceIam]
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_ids: Mapping[str, pulumi.Input[str]]
    api_target_group_arn: pulumi.Input[str]
    api_listener: aws.lb.Listener
    # Per service: container variable -> valueFrom (the API's TLS material, the handlers' own).
    secrets: Mapping[str, Mapping[str, pulumi.Input[str]]]
    # Per service: what its tasks need to start (role policies, routes, endpoints, logs, secrets).
    start_dependencies: Mapping[str, Sequence[pulumi.Resource]]


def fargate_task_definition(
    resource_name: str,
    *,
    family: str,
    size: TaskSize,
    config: StackConfig,
    identity: ServiceIam,
    containers: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
    volumes: Sequence[aws.ecs.TaskDefinitionVolumeArgsDict] = (),
) -> aws.ecs.TaskDefinition:
    """A Fargate (awsvpc, Linux) task definition run under `identity`'s two roles."""
    return aws.ecs.TaskDefinition(
        resource_name,
        family=family,
        cpu=str(size.cpu),
        memory=str(size.memory),
        network_mode="awsvpc",
        requires_compatibilities=["FARGATE"],
        runtime_platform={
            "operating_system_family": "LINUX",
            "cpu_architecture": config.cpu_architecture,
        },
        execution_role_arn=identity.execution_role.arn,
        task_role_arn=identity.task_role.arn,
        volumes=list(volumes) or None,
        container_definitions=containers,
        opts=opts,
    )


def _size(config: StackConfig, service: str) -> TaskSize:
    size: TaskSize = getattr(config, service)
    return size


def _initial_count(config: StackConfig, service: str) -> int:
    return {
        "api": config.api.min_count,
        "relay": config.relay.count,
        "worker": config.worker.min_count,
    }[service]


class EcsServices(pulumi.ComponentResource):
    cluster: aws.ecs.Cluster
    services: dict[str, aws.ecs.Service]

    def __init__(
        self, name: str, args: EcsServicesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("conveyor:compute:EcsServices", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        config = args.config
        self.cluster = aws.ecs.Cluster(
            f"{name}-cluster",
            name=args.name_prefix,
            settings=[{"name": "containerInsights", "value": "enabled"}],
            opts=child,
        )
        self.services = {}
        for service in SERVICES:
            containers = TaskContainers(
                service=service,
                config=config,
                refs=args.refs,
                collector_config=args.collector_config,
                log_group_name=args.log_group_names[service],
                remote_write_url=args.remote_write_url,
                trace_gateway_endpoint=args.trace_gateway_endpoint,
                secrets=args.secrets.get(service, {}),
            )
            task_definition = fargate_task_definition(
                f"{name}-{service}-task",
                family=f"{args.name_prefix}-{service}",
                size=_size(config, service),
                config=config,
                identity=args.identities[service],
                containers=pulumi.Output.json_dumps(containers.definitions()),
                volumes=[{"name": SCRATCH_VOLUME}],
                opts=child,
            )
            is_api = service == "api"
            self.services[service] = aws.ecs.Service(
                f"{name}-{service}",
                name=f"{args.name_prefix}-{service}",
                cluster=self.cluster.arn,
                task_definition=task_definition.arn,
                desired_count=_initial_count(config, service),
                launch_type="FARGATE",
                network_configuration={
                    "subnets": list(args.subnet_ids),
                    "security_groups": [args.security_group_ids[service]],
                    "assign_public_ip": False,
                },
                deployment_circuit_breaker={"enable": True, "rollback": True},
                wait_for_steady_state=True,
                deployment_minimum_healthy_percent=100,
                deployment_maximum_percent=200,
                enable_ecs_managed_tags=True,
                propagate_tags="SERVICE",
                load_balancers=(
                    [
                        {
                            "target_group_arn": args.api_target_group_arn,
                            "container_name": "api",
                            "container_port": config.api_port,
                        }
                    ]
                    if is_api
                    else None
                ),
                health_check_grace_period_seconds=60 if is_api else None,
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=[
                        *args.start_dependencies[service],
                        *([args.api_listener] if is_api else []),
                    ],
                    ignore_changes=["desiredCount"] if service in AUTOSCALED else [],
                ),
            )
        self.register_outputs(
            {
                "cluster_name": self.cluster.name,
                "service_names": {s: svc.name for s, svc in self.services.items()},
            }
        )
