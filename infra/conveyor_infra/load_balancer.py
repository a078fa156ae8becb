"""The API's front door: a Network Load Balancer with a plain TCP listener, so the TLS handshake
(and the client certificate that names the tenant) reaches the API tasks untouched."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

# Long server streams (ListTasks, WatchTask) get this long to finish when a task is replaced.
DEREGISTRATION_DELAY_SECONDS = 60


@dataclass(frozen=True)
class ApiLoadBalancerArgs:
    name_prefix: str
    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    internet_facing: bool
    listener_port: int
    target_port: int


class ApiLoadBalancer(pulumi.ComponentResource):
    load_balancer: aws.lb.LoadBalancer
    target_group: aws.lb.TargetGroup
    listener: aws.lb.Listener
    endpoint: pulumi.Output[str]

    def __init__(
        self, name: str, args: ApiLoadBalancerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("conveyor:network:ApiLoadBalancer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.load_balancer = aws.lb.LoadBalancer(
            f"{name}-nlb",
            name=f"{args.name_prefix}-api",
            load_balancer_type="network",
            internal=not args.internet_facing,
            subnets=list(args.subnet_ids),
            security_groups=[args.security_group_id],
            enable_cross_zone_load_balancing=True,
            opts=child,
        )
        self.target_group = aws.lb.TargetGroup(
            f"{name}-targets",
            name=f"{args.name_prefix}-api",
            port=args.target_port,
            protocol="TCP",
            target_type="ip",
            vpc_id=args.vpc_id,
            preserve_client_ip="false",
            deregistration_delay=DEREGISTRATION_DELAY_SECONDS,
            # A TCP connect: an HTTP probe would fail the mandatory client-certificate check.
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                protocol="TCP", interval=10, healthy_threshold=2, unhealthy_threshold=2
            ),
            opts=child,
        )
        self.listener = aws.lb.Listener(
            f"{name}-grpc",
            load_balancer_arn=self.load_balancer.arn,
            port=args.listener_port,
            protocol="TCP",
            default_actions=[
                aws.lb.ListenerDefaultActionArgs(
                    type="forward", target_group_arn=self.target_group.arn
                )
            ],
            opts=child,
        )
        self.endpoint = pulumi.Output.concat(
            self.load_balancer.dns_name, ":", str(args.listener_port)
        )
        self.register_outputs({"endpoint": self.endpoint})
