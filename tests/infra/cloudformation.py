"""Render what a stack declares as a CloudFormation template, so cfn-lint can check it against
AWS's own value constraints (the resource provider schemas it ships: patterns, enums, lengths,
Fargate sizes, ...).

The Pulumi program is not CloudFormation: each declared resource maps to the CloudFormation
type that creates the same AWS object, with the same values. References between resources are
the mock cloud's literal ids and ARNs, in AWS's formats. `NOT_RENDERED` names the declared types
without a CloudFormation counterpart and why; a declared type in neither table fails the test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from conveyor_dev.emulators.declared import Declaration, DeclaredResource

Properties = dict[str, Any]
Rendered = list[tuple[str, str, Properties]]  # (logical id suffix, CloudFormation type, props)

NOT_RENDERED = {
    "aws:secretsmanager/secretVersion:SecretVersion": (
        "CloudFormation has no secret-version resource (a value is part of AWS::SecretsManager::"
        "Secret); the botocore check covers its PutSecretValue call"
    ),
    "aws:amp/alertManagerDefinition:AlertManagerDefinition": (
        "CloudFormation folds it into AWS::APS::Workspace; amtool checks the definition itself"
    ),
}


def integral(value: Any) -> Any:
    """Pulumi hands numbers over as floats: 30.0 -> 30, recursively, as the provider sends them."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


def pascal(value: Any, keep: frozenset[str] = frozenset({"options"})) -> Any:
    """ECS's camelCase JSON in CloudFormation's PascalCase; maps in `keep` stay as they are."""
    if isinstance(value, list):
        return [pascal(v, keep) for v in value]
    if not isinstance(value, dict):
        return value
    return {
        key[:1].upper() + key[1:]: (v if key in keep else pascal(v, keep))
        for key, v in value.items()
    }


def _tags(tags: Mapping[str, str] | None) -> list[dict[str, str]] | None:
    return [{"Key": k, "Value": v} for k, v in sorted((tags or {}).items())] or None


def _name(resource: DeclaredResource) -> str:
    return str(resource.inputs.get("name") or resource.outputs["name"])


def _queue(r: DeclaredResource, i: Mapping[str, Any], d: Declaration) -> Rendered:
    props = {
        "QueueName": _name(r),
        "FifoQueue": i.get("fifoQueue"),
        "ContentBasedDeduplication": i.get("contentBasedDeduplication"),
        "DeduplicationScope": i.get("deduplicationScope"),
        "FifoThroughputLimit": i.get("fifoThroughputLimit"),
        "MessageRetentionPeriod": i.get("messageRetentionSeconds"),
        "ReceiveMessageWaitTimeSeconds": i.get("receiveWaitTimeSeconds"),
        "VisibilityTimeout": i.get("visibilityTimeoutSeconds"),
        "SqsManagedSseEnabled": i.get("sqsManagedSseEnabled"),
        "RedrivePolicy": json.loads(i["redrivePolicy"]) if i.get("redrivePolicy") else None,
    }
    return [("", "AWS::SQS::Queue", props)]


def _table(r: DeclaredResource, i: Mapping[str, Any], d: Declaration) -> Rendered:
    def keys(hash_key: str, range_key: str | None) -> list[dict[str, str]]:
        schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
        return schema + ([{"AttributeName": range_key, "KeyType": "RANGE"}] if range_key else [])

    pitr = i.get("pointInTimeRecovery") or {}
    props = {
        "TableName": _name(r),
        "BillingMode": i.get("billingMode"),
        "AttributeDefinitions": [
            {"AttributeName": a["name"], "AttributeType": a["type"]} for a in i["attributes"]
        ],
        "KeySchema": keys(i["hashKey"], i.get("rangeKey")),
        "GlobalSecondaryIndexes": [
            {
                "IndexName": g["name"],
                "KeySchema": [
                    {"AttributeName": k["attributeName"], "KeyType": k["keyType"]}
                    for k in g["keySchemas"]
                ],
                "Projection": {
                    "ProjectionType": g["projectionType"],
                    "NonKeyAttributes": g.get("nonKeyAttributes"),
                },
            }
            for g in i.get("globalSecondaryIndexes", [])
        ]
        or None,
        "PointInTimeRecoverySpecification": {
            "PointInTimeRecoveryEnabled": pitr.get("enabled", False),
            "RecoveryPeriodInDays": pitr.get("recoveryPeriodInDays"),
        },
        "SSESpecification": {"SSEEnabled": (i.get("serverSideEncryption") or {}).get("enabled")},
        "TimeToLiveSpecification": (
            {"AttributeName": i["ttl"]["attributeName"], "Enabled": i["ttl"]["enabled"]}
            if i.get("ttl")
            else None
        ),
        "DeletionProtectionEnabled": i.get("deletionProtectionEnabled"),
    }
    return [("", "AWS::DynamoDB::Table", props)]


def _security_group(r: DeclaredResource, i: Mapping[str, Any], d: Declaration) -> Rendered:
    def rules(kind: str, peer_key: str) -> list[Properties]:
        out = []
        for rule in i.get(kind, []):
            base = {
                "IpProtocol": rule["protocol"],
                "FromPort": rule["fromPort"],
                "ToPort": rule["toPort"],
                "Description": rule.get("description"),
            }
            out += [{**base, "CidrIp": cidr} for cidr in rule.get("cidrBlocks", [])]
            out += [{**base, peer_key: group} for group in rule.get("securityGroups", [])]
        return out

    props = {
        "GroupName": _name(r),
        "GroupDescription": i.get("description"),
        "VpcId": i.get("vpcId"),
        "SecurityGroupIngress": rules("ingress", "SourceSecurityGroupId") or None,
        "SecurityGroupEgress": rules("egress", "DestinationSecurityGroupId") or None,
        "Tags": _tags(i.get("tags")),
    }
    return [("", "AWS::EC2::SecurityGroup", props)]


def _route_table(r: DeclaredResource, i: Mapping[str, Any], d: Declaration) -> Rendered:
    rendered: Rendered = [
        ("", "AWS::EC2::RouteTable", {"VpcId": i["vpcId"], "Tags": _tags(i.get("tags"))})
    ]
    for index, route in enumerate(i.get("routes", [])):
        target = {"GatewayId": route.get("gatewayId"), "NatGatewayId": route.get("natGatewayId")}
        props = {"RouteTableId": r.outputs["id"], "DestinationCidrBlock": route["cidrBlock"]}
        rendered.append((f"Route{index}", "AWS::EC2::Route", props | target))
    return rendered


def _task_definition(r: DeclaredResource, i: Mapping[str, Any], d: Declaration) -> Rendered:
    props = {
        "Family": i["family"],
        "Cpu": i.get("cpu"),
        "Memory": i.get("memory"),
        "NetworkMode": i.get("networkMode"),
        "RequiresCompatibilities": i.get("requiresCompatibilities"),
        "ExecutionRoleArn": i.get("executionRoleArn"),
        "TaskRoleArn": i.get("taskRoleArn"),
        "RuntimePlatform": pascal(i.get("runtimePlatform")),
        "Volumes": pascal(i.get("volumes")),
        "ContainerDefinitions": pascal(json.loads(i["containerDefinitions"])),
    }
    return [("", "AWS::ECS::TaskDefinition", props)]


def _service(r: DeclaredResource, i: Mapping[str, Any], d: Declaration) -> Rendered:
    network = i["networkConfiguration"]
    breaker = i.get("deploymentCircuitBreaker")
    props = {
        "ServiceName": _name(r),
        "Cluster": i["cluster"],
        "TaskDefinition": i["taskDefinition"],
        "DesiredCount": i.get("desiredCount"),
        "LaunchType": i.get("launchType"),
        "NetworkConfiguration": {
            "AwsvpcConfiguration": {
                "Subnets": network["subnets"],
                "SecurityGroups": network.get("securityGroups"),
                "AssignPublicIp": "ENABLED" if network.get("assignPublicIp") else "DISABLED",
            }
        },
        "DeploymentConfiguration": {
            "DeploymentCircuitBreaker": pascal(breaker) if breaker else None,
            "MinimumHealthyPercent": i.get("deploymentMinimumHealthyPercent"),
            "MaximumPercent": i.get("deploymentMaximumPercent"),
        },
        "EnableECSManagedTags": i.get("enableEcsManagedTags"),
        "PropagateTags": i.get("propagateTags"),
        "LoadBalancers": pascal(i.get("loadBalancers")),
        "HealthCheckGracePeriodSeconds": i.get("healthCheckGracePeriodSeconds"),
        "ServiceRegistries": [pascal(i["serviceRegistries"])]
        if i.get("serviceRegistries")
        else None,
    }
    return [("", "AWS::ECS::Service", props)]


def _load_balancer(r: DeclaredResource, i: Mapping[str, Any], d: Declaration) -> Rendered:
    cross_zone = "true" if i.get("enableCrossZoneLoadBalancing") else "false"
    props = {
        "Name": _name(r),
        "Type": i.get("loadBalancerType"),
        "Scheme": "internal" if i.get("internal") else "internet-facing",
        "Subnets": i.get("subnets"),
        "SecurityGroups": i.get("securityGroups"),
        "LoadBalancerAttributes": [
            {"Key": "load_balancing.cross_zone.enabled", "Value": cross_zone}
        ],
    }
    return [("", "AWS::ElasticLoadBalancingV2::LoadBalancer", props)]


def _target_group(r: DeclaredResource, i: Mapping[str, Any], d: Declaration) -> Rendered:
    health = i.get("healthCheck") or {}
    attributes = {
        "deregistration_delay.timeout_seconds": i.get("deregistrationDelay"),
        "preserve_client_ip.enabled": i.get("preserveClientIp"),
    }
    props = {
        "Name": _name(r),
        "Port": i.get("port"),
        "Protocol": i.get("protocol"),
        "TargetType": i.get("targetType"),
        "VpcId": i.get("vpcId"),
        "HealthCheckProtocol": health.get("protocol"),
        "HealthCheckIntervalSeconds": health.get("interval"),
        "HealthyThresholdCount": health.get("healthyThreshold"),
        "UnhealthyThresholdCount": health.get("unhealthyThreshold"),
        "TargetGroupAttributes": [
            {"Key": key, "Value": str(value)} for key, value in attributes.items() if value
        ],
    }
    return [("", "AWS::ElasticLoadBalancingV2::TargetGroup", props)]


def _scaling_policy(r: DeclaredResource, i: Mapping[str, Any], d: Declaration) -> Rendered:
    tracking = pascal(i.get("targetTrackingScalingPolicyConfiguration"))
    props = {
        "PolicyName": _name(r),
        "PolicyType": i.get("policyType"),
        "ResourceId": i["resourceId"],
        "ScalableDimension": i["scalableDimension"],
        "ServiceNamespace": i["serviceNamespace"],
        "TargetTrackingScalingPolicyConfiguration": tracking,
    }
    return [("", "AWS::ApplicationAutoScaling::ScalingPolicy", props)]


def _rule_namespace(r: DeclaredResource, i: Mapping[str, Any], d: Declaration) -> Rendered:
    (workspace,) = [
        w for w in d.of_type("aws:amp/workspace:Workspace") if w.outputs["id"] == i["workspaceId"]
    ]
    props = {"Name": _name(r), "Data": i["data"], "Workspace": workspace.outputs["arn"]}
    return [("", "AWS::APS::RuleGroupsNamespace", props)]


def _simple(
    cfn_type: str, fields: Mapping[str, str | Callable[..., Any]]
) -> Callable[..., Rendered]:
    """A resource whose CloudFormation properties are plain renames of Pulumi inputs (or a
    function of the resource, for values that need it)."""

    def render(r: DeclaredResource, i: Mapping[str, Any], d: Declaration) -> Rendered:
        props = {
            cfn: (source(r) if callable(source) else i.get(source))
            for cfn, source in fields.items()
        }
        return [("", cfn_type, props)]

    return render


def _json_input(key: str) -> Callable[[DeclaredResource], Any]:
    return lambda r: json.loads(r.inputs[key])


RENDERERS: dict[str, Callable[[DeclaredResource, Mapping[str, Any], Declaration], Rendered]] = {
    "aws:sqs/queue:Queue": _queue,
    "aws:dynamodb/table:Table": _table,
    "aws:ec2/securityGroup:SecurityGroup": _security_group,
    "aws:ec2/routeTable:RouteTable": _route_table,
    "aws:ecs/taskDefinition:TaskDefinition": _task_definition,
    "aws:ecs/service:Service": _service,
    "aws:lb/loadBalancer:LoadBalancer": _load_balancer,
    "aws:lb/targetGroup:TargetGroup": _target_group,
    "aws:appautoscaling/policy:Policy": _scaling_policy,
    "aws:lb/listener:Listener": _simple(
        "AWS::ElasticLoadBalancingV2::Listener",
        {
            "LoadBalancerArn": "loadBalancerArn",
            "Port": "port",
            "Protocol": "protocol",
            "DefaultActions": lambda r: pascal(integral(r.inputs["defaultActions"])),
        },
    ),
    "aws:sns/topic:Topic": _simple("AWS::SNS::Topic", {"TopicName": _name}),
    "aws:sns/topicPolicy:TopicPolicy": _simple(
        "AWS::SNS::TopicPolicy",
        {"PolicyDocument": _json_input("policy"), "Topics": lambda r: [r.inputs["arn"]]},
    ),
    "aws:sns/topicSubscription:TopicSubscription": _simple(
        "AWS::SNS::Subscription",
        {"Protocol": "protocol", "Endpoint": "endpoint", "TopicArn": "topic"},
    ),
    "aws:cloudwatch/metricAlarm:MetricAlarm": _simple(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": _name,
            "AlarmDescription": "alarmDescription",
            "Namespace": "namespace",
            "MetricName": "metricName",
            "Statistic": "statistic",
            "Period": "period",
            "EvaluationPeriods": "evaluationPeriods",
            "Threshold": "threshold",
            "ComparisonOperator": "comparisonOperator",
            "TreatMissingData": "treatMissingData",
            "AlarmActions": "alarmActions",
            "OKActions": "okActions",
            "Dimensions": lambda r: [
                {"Name": k, "Value": v} for k, v in sorted(r.inputs["dimensions"].items())
            ],
        },
    ),
    "aws:cloudwatch/logGroup:LogGroup": _simple(
        "AWS::Logs::LogGroup", {"LogGroupName": _name, "RetentionInDays": "retentionInDays"}
    ),
    "aws:kms/key:Key": _simple(
        "AWS::KMS::Key",
        {
            "Description": "description",
            "EnableKeyRotation": "enableKeyRotation",
            "PendingWindowInDays": "deletionWindowInDays",
        },
    ),
    "aws:kms/alias:Alias": _simple(
        "AWS::KMS::Alias", {"AliasName": _name, "TargetKeyId": "targetKeyId"}
    ),
    "aws:secretsmanager/secret:Secret": _simple(
        "AWS::SecretsManager::Secret",
        {"Name": _name, "Description": "description", "KmsKeyId": "kmsKeyId"},
    ),
    "aws:iam/role:Role": _simple(
        "AWS::IAM::Role",
        {
            "RoleName": _name,
            "Description": "description",
            "AssumeRolePolicyDocument": _json_input("assumeRolePolicy"),
        },
    ),
    "aws:iam/rolePolicy:RolePolicy": _simple(
        "AWS::IAM::RolePolicy",
        {"PolicyName": _name, "RoleName": "role", "PolicyDocument": _json_input("policy")},
    ),
    "aws:ec2/vpc:Vpc": _simple(
        "AWS::EC2::VPC",
        {
            "CidrBlock": "cidrBlock",
            "EnableDnsHostnames": "enableDnsHostnames",
            "EnableDnsSupport": "enableDnsSupport",
            "Tags": lambda r: _tags(r.inputs.get("tags")),
        },
    ),
    "aws:ec2/subnet:Subnet": _simple(
        "AWS::EC2::Subnet",
        {
            "VpcId": "vpcId",
            "CidrBlock": "cidrBlock",
            "AvailabilityZone": "availabilityZone",
            "Tags": lambda r: _tags(r.inputs.get("tags")),
        },
    ),
    "aws:ec2/eip:Eip": _simple("AWS::EC2::EIP", {"Domain": "domain"}),
    "aws:ec2/internetGateway:InternetGateway": _simple("AWS::EC2::InternetGateway", {}),
    "aws:ec2/natGateway:NatGateway": _simple(
        "AWS::EC2::NatGateway",
        {
            "AllocationId": "allocationId",
            "SubnetId": "subnetId",
            "Tags": lambda r: _tags(r.inputs.get("tags")),
        },
    ),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": _simple(
        "AWS::EC2::SubnetRouteTableAssociation",
        {"SubnetId": "subnetId", "RouteTableId": "routeTableId"},
    ),
    "aws:ec2/vpcEndpoint:VpcEndpoint": _simple(
        "AWS::EC2::VPCEndpoint",
        {
            "VpcId": "vpcId",
            "ServiceName": "serviceName",
            "VpcEndpointType": "vpcEndpointType",
            "PrivateDnsEnabled": "privateDnsEnabled",
            "SubnetIds": "subnetIds",
            "SecurityGroupIds": "securityGroupIds",
            "RouteTableIds": "routeTableIds",
            "PolicyDocument": lambda r: (
                json.loads(r.inputs["policy"]) if r.inputs.get("policy") else None
            ),
        },
    ),
    "aws:ecs/cluster:Cluster": _simple(
        "AWS::ECS::Cluster",
        {"ClusterName": _name, "ClusterSettings": lambda r: pascal(r.inputs.get("settings"))},
    ),
    "aws:amp/workspace:Workspace": _simple("AWS::APS::Workspace", {"Alias": "alias"}),
    "aws:amp/ruleGroupNamespace:RuleGroupNamespace": _rule_namespace,
    "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace": _simple(
        "AWS::ServiceDiscovery::PrivateDnsNamespace",
        {"Name": _name, "Vpc": "vpc", "Description": "description"},
    ),
    "aws:servicediscovery/service:Service": _simple(
        "AWS::ServiceDiscovery::Service",
        {"Name": _name, "DnsConfig": lambda r: _dns_config(r.inputs["dnsConfig"])},
    ),
    "aws:appautoscaling/target:Target": _simple(
        "AWS::ApplicationAutoScaling::ScalableTarget",
        {
            "ServiceNamespace": "serviceNamespace",
            "ScalableDimension": "scalableDimension",
            "ResourceId": "resourceId",
            "MinCapacity": "minCapacity",
            "MaxCapacity": "maxCapacity",
        },
    ),
}


def _dns_config(config: Mapping[str, Any]) -> Properties:
    return {
        "NamespaceId": config["namespaceId"],
        "RoutingPolicy": config.get("routingPolicy"),
        "DnsRecords": [{"Type": d["type"], "TTL": d["ttl"]} for d in config["dnsRecords"]],
    }


def _logical_id(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def unrendered_types(declaration: Declaration) -> set[str]:
    """Declared AWS types this module neither renders nor explains in NOT_RENDERED."""
    return (
        {r.type for r in declaration if r.custom and r.type.startswith("aws:")}
        - set(RENDERERS)
        - set(NOT_RENDERED)
    )


def template(declaration: Declaration) -> dict[str, Any]:
    """One CloudFormation template with every renderable resource the stack declares."""
    resources: dict[str, Any] = {}
    for resource in declaration:
        render = RENDERERS.get(resource.type)
        if render is None:
            continue
        for suffix, cfn_type, props in render(
            resource, integral(dict(resource.inputs)), declaration
        ):
            logical_id = _logical_id(resource.name) + suffix
            assert logical_id not in resources, f"two resources render as {logical_id}"
            resources[logical_id] = {"Type": cfn_type, "Properties": _drop_none(integral(props))}
    return {"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources}
