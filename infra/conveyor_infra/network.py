"""The VPC: public subnets for NAT and an internet-facing NLB, private subnets for the tasks,
security groups per role, and VPC endpoints so AWS API traffic stays off the NAT gateways."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from conveyor_infra.topology import OTLP_GRPC_PORT, SERVICES, TRACE_GATEWAY

HTTPS = 443
# Interface endpoints for what the tasks call on every request or at start-up. ECR layers come
# from S3, so S3 gets a (free) gateway endpoint next to DynamoDB's.
INTERFACE_ENDPOINTS = ("sqs", "secretsmanager", "ecr.api", "ecr.dkr", "logs")
GATEWAY_ENDPOINTS = ("dynamodb", "s3")


@dataclass(frozen=True)
class NetworkArgs:
    name_prefix: str
    region: str
    vpc_cidr: str
    availability_zones: int
    # One NAT gateway (cheap, a single-AZ point of failure for egress) or one per AZ.
    nat_per_az: bool
    api_port: int
    api_listener_port: int
    api_allowed_cidrs: list[str]


def subnet_cidrs(vpc_cidr: str, count: int) -> tuple[list[str], list[str]]:
    """Private subnets take the first sixteenths of the VPC; public ones share the last."""
    sixteenths = list(ipaddress.IPv4Network(vpc_cidr).subnets(prefixlen_diff=4))
    private = [str(net) for net in sixteenths[:count]]
    public = [str(net) for net in list(sixteenths[-1].subnets(prefixlen_diff=2))[:count]]
    return private, public


def _egress_https() -> aws.ec2.SecurityGroupEgressArgs:
    # AWS APIs (endpoints, NAT) and image pulls are all HTTPS; the VPC resolver is not filtered.
    return aws.ec2.SecurityGroupEgressArgs(
        protocol="tcp", from_port=HTTPS, to_port=HTTPS, cidr_blocks=["0.0.0.0/0"]
    )


def _egress_to_trace_gateway(vpc_cidr: str) -> aws.ec2.SecurityGroupEgressArgs:
    # By CIDR, not by the gateway's group, which itself names these groups (no cycle).
    return aws.ec2.SecurityGroupEgressArgs(
        protocol="tcp", from_port=OTLP_GRPC_PORT, to_port=OTLP_GRPC_PORT, cidr_blocks=[vpc_cidr]
    )


class Network(pulumi.ComponentResource):
    vpc: aws.ec2.Vpc
    private_subnet_ids: list[pulumi.Output[str]]
    public_subnet_ids: list[pulumi.Output[str]]
    load_balancer_sg: aws.ec2.SecurityGroup
    service_sgs: dict[str, aws.ec2.SecurityGroup]
    # What a task needs before it can start: its egress routes and the VPC endpoints.
    private_routes: list[pulumi.Resource]
    endpoints: list[aws.ec2.VpcEndpoint]

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("conveyor:network:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        zones = aws.get_availability_zones_output(state="available")
        private_cidrs, public_cidrs = subnet_cidrs(args.vpc_cidr, args.availability_zones)

        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": args.name_prefix},
            opts=child,
        )
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, opts=child)
        public_routes = aws.ec2.RouteTable(
            f"{name}-public-routes",
            vpc_id=self.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=gateway.id)],
            tags={"Name": f"{args.name_prefix}-public"},
            opts=child,
        )

        self.public_subnet_ids = []
        self.private_subnet_ids = []
        self.private_routes = []
        self.endpoints = []
        self._args = args
        self._name = name
        private_route_table_ids = []
        nat_ids: list[pulumi.Output[str]] = []
        for index in range(args.availability_zones):
            zone = zones.names[index]
            public = aws.ec2.Subnet(
                f"{name}-public-{index}",
                vpc_id=self.vpc.id,
                cidr_block=public_cidrs[index],
                availability_zone=zone,
                tags={"Name": f"{args.name_prefix}-public-{index}"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{index}-association",
                subnet_id=public.id,
                route_table_id=public_routes.id,
                opts=child,
            )
            if args.nat_per_az or index == 0:
                address = aws.ec2.Eip(f"{name}-nat-{index}-ip", domain="vpc", opts=child)
                nat = aws.ec2.NatGateway(
                    f"{name}-nat-{index}",
                    allocation_id=address.id,
                    subnet_id=public.id,
                    tags={"Name": f"{args.name_prefix}-nat-{index}"},
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway]),
                )
                nat_ids.append(nat.id)
            private = aws.ec2.Subnet(
                f"{name}-private-{index}",
                vpc_id=self.vpc.id,
                cidr_block=private_cidrs[index],
                availability_zone=zone,
                tags={"Name": f"{args.name_prefix}-private-{index}"},
                opts=child,
            )
            routes = aws.ec2.RouteTable(
                f"{name}-private-{index}-routes",
                vpc_id=self.vpc.id,
                routes=[
                    aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat_ids[-1])
                ],
                tags={"Name": f"{args.name_prefix}-private-{index}"},
                opts=child,
            )
            association = aws.ec2.RouteTableAssociation(
                f"{name}-private-{index}-association",
                subnet_id=private.id,
                route_table_id=routes.id,
                opts=child,
            )
            self.public_subnet_ids.append(public.id)
            self.private_subnet_ids.append(private.id)
            private_route_table_ids.append(routes.id)
            self.private_routes += [routes, association]
        self._private_route_table_ids = private_route_table_ids

        self.load_balancer_sg = aws.ec2.SecurityGroup(
            f"{name}-nlb",
            name=f"{args.name_prefix}-nlb",
            description="gRPC clients to the API load balancer",
            vpc_id=self.vpc.id,
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    protocol="tcp",
                    from_port=args.api_listener_port,
                    to_port=args.api_listener_port,
                    cidr_blocks=args.api_allowed_cidrs,
                )
            ],
            egress=[
                aws.ec2.SecurityGroupEgressArgs(
                    protocol="tcp",
                    from_port=args.api_port,
                    to_port=args.api_port,
                    cidr_blocks=[args.vpc_cidr],
                )
            ],
            opts=child,
        )
        self.service_sgs = {
            "api": aws.ec2.SecurityGroup(
                f"{name}-api",
                name=f"{args.name_prefix}-api",
                description="API tasks: gRPC from the load balancer only",
                vpc_id=self.vpc.id,
                ingress=[
                    aws.ec2.SecurityGroupIngressArgs(
                        protocol="tcp",
                        from_port=args.api_port,
                        to_port=args.api_port,
                        security_groups=[self.load_balancer_sg.id],
                    )
                ],
                egress=[_egress_https(), _egress_to_trace_gateway(args.vpc_cidr)],
                opts=child,
            ),
            **{
                service: aws.ec2.SecurityGroup(
                    f"{name}-{service}",
                    name=f"{args.name_prefix}-{service}",
                    description=f"{service} tasks: no inbound traffic",
                    vpc_id=self.vpc.id,
                    egress=[_egress_https(), _egress_to_trace_gateway(args.vpc_cidr)],
                    opts=child,
                )
                for service in ("relay", "worker")
            },
        }
        self.service_sgs[TRACE_GATEWAY] = aws.ec2.SecurityGroup(
            f"{name}-{TRACE_GATEWAY}",
            name=f"{args.name_prefix}-{TRACE_GATEWAY}",
            description="Trace gateway: OTLP from the sidecars of the service tasks",
            vpc_id=self.vpc.id,
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    protocol="tcp",
                    from_port=OTLP_GRPC_PORT,
                    to_port=OTLP_GRPC_PORT,
                    security_groups=[self.service_sgs[s].id for s in SERVICES],
                )
            ],
            egress=[_egress_https()],
            opts=child,
        )
        self._endpoints_sg = aws.ec2.SecurityGroup(
            f"{name}-endpoints",
            name=f"{args.name_prefix}-endpoints",
            description="HTTPS from the tasks to the interface VPC endpoints",
            vpc_id=self.vpc.id,
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    protocol="tcp",
                    from_port=HTTPS,
                    to_port=HTTPS,
                    security_groups=[sg.id for sg in self.service_sgs.values()],
                )
            ],
            opts=child,
        )
        self.register_outputs(
            {"vpc_id": self.vpc.id, "private_subnet_ids": self.private_subnet_ids}
        )

    def add_endpoints(self, policies: Mapping[str, pulumi.Input[str]]) -> None:
        """The VPC endpoints, each with its endpoint policy (`policies[service]`, JSON): declared
        once the policies' ARNs exist, which depend on resources that need the network."""
        missing = set(INTERFACE_ENDPOINTS + GATEWAY_ENDPOINTS) - set(policies)
        if missing:
            raise ValueError(f"no endpoint policy for {sorted(missing)}")
        child = pulumi.ResourceOptions(parent=self)
        for service in INTERFACE_ENDPOINTS:
            self.endpoints.append(
                aws.ec2.VpcEndpoint(
                    f"{self._name}-{service.replace('.', '-')}-endpoint",
                    vpc_id=self.vpc.id,
                    service_name=f"com.amazonaws.{self._args.region}.{service}",
                    vpc_endpoint_type="Interface",
                    private_dns_enabled=True,
                    subnet_ids=self.private_subnet_ids,
                    security_group_ids=[self._endpoints_sg.id],
                    policy=policies[service],
                    opts=child,
                )
            )
        for service in GATEWAY_ENDPOINTS:
            self.endpoints.append(
                aws.ec2.VpcEndpoint(
                    f"{self._name}-{service}-endpoint",
                    vpc_id=self.vpc.id,
                    service_name=f"com.amazonaws.{self._args.region}.{service}",
                    vpc_endpoint_type="Gateway",
                    route_table_ids=self._private_route_table_ids,
                    policy=policies[service],
                    opts=child,
                )
            )
