"""The AWS API calls the provider makes to create what a stack declares, with the declared
values, checked against botocore's service models.

botocore's ParamValidator checks what the model's input shapes require: required members, no
unknown members, types, enums are not checked, minimum lengths and ranges. `ModelConstraints`
adds the rest the model states: maximum lengths and values, and `pattern`s (in Python's regex
dialect; a pattern Python cannot compile is collected in `unchecked_patterns`, not passed).
Models state only what they state: EC2's has no pattern for a security group description (its
constraint is prose in the documentation), so the apostrophe of issue 10 is cfn-lint's catch.

Every declared `aws:` type maps to its calls (`CALLS`); the `tls:` resources are computed by
the tls provider on the machine running Pulumi and call no AWS API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import botocore.session
from botocore.model import OperationModel, Shape
from botocore.validate import ParamValidator, ValidationErrors
from cloudformation import integral, pascal
from conveyor_dev.emulators.declared import Declaration, DeclaredResource

# Declared AWS types without calls here, with the reason: none today.
NOT_MAPPED: dict[str, str] = {}


@dataclass(frozen=True)
class ApiCall:
    resource: str
    service: str
    operation: str
    params: Mapping[str, Any]


Calls = list[tuple[str, str, dict[str, Any]]]


class ModelConstraints(ParamValidator):
    """ParamValidator plus the model's `max` and `pattern` constraints."""

    unchecked_patterns: set[str] = set()

    def _validate_string(self, param: Any, shape: Shape, errors: ValidationErrors, name: str):
        super()._validate_string(param, shape, errors, name)
        if not isinstance(param, str):
            return
        maximum = shape.metadata.get("max")
        if maximum is not None and len(param) > maximum:
            errors.report(name, "invalid type", param=param, valid_types=[f"<= {maximum} chars"])
        pattern = shape.metadata.get("pattern")
        if pattern is None:
            return
        try:
            compiled = re.compile(pattern, re.DOTALL)
        except re.error:
            ModelConstraints.unchecked_patterns.add(pattern)
            return
        if compiled.fullmatch(param) is None:
            errors.report(name, "invalid type", param=param, valid_types=[f"/{pattern}/"])

    def _validate_integer(self, param: Any, shape: Shape, errors: ValidationErrors, name: str):
        super()._validate_integer(param, shape, errors, name)
        maximum = shape.metadata.get("max")
        if isinstance(param, int) and maximum is not None and param > maximum:
            errors.report(name, "invalid type", param=param, valid_types=[f"<= {maximum}"])

    def _validate_list(self, param: Any, shape: Shape, errors: ValidationErrors, name: str):
        super()._validate_list(param, shape, errors, name)
        maximum = shape.metadata.get("max")
        if isinstance(param, list) and maximum is not None and len(param) > maximum:
            errors.report(name, "invalid type", param=param, valid_types=[f"<= {maximum} items"])


@cache
def operation_model(service: str, operation: str) -> OperationModel:
    model = botocore.session.get_session().get_service_model(service)
    return model.operation_model(operation)


def problems(call: ApiCall) -> str:
    """botocore's report for the call's parameters; empty when they fit the input shape."""
    shape = operation_model(call.service, call.operation).input_shape
    report = ModelConstraints().validate(dict(call.params), shape)
    return str(report.generate_report()) if report.has_errors() else ""


def _tags(tags: Mapping[str, str] | None) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted((tags or {}).items())]


def _name(r: DeclaredResource) -> str:
    return str(r.inputs.get("name") or r.outputs["name"])


def _queue(r: DeclaredResource, i: Mapping[str, Any]) -> Calls:
    names = {
        "fifoQueue": "FifoQueue",
        "contentBasedDeduplication": "ContentBasedDeduplication",
        "deduplicationScope": "DeduplicationScope",
        "fifoThroughputLimit": "FifoThroughputLimit",
        "messageRetentionSeconds": "MessageRetentionPeriod",
        "receiveWaitTimeSeconds": "ReceiveMessageWaitTimeSeconds",
        "visibilityTimeoutSeconds": "VisibilityTimeout",
        "sqsManagedSseEnabled": "SqsManagedSseEnabled",
        "redrivePolicy": "RedrivePolicy",
    }
    attributes = {
        attribute: str(i[key]).lower() if isinstance(i[key], bool) else str(i[key])
        for key, attribute in names.items()
        if key in i
    }
    return [("sqs", "CreateQueue", {"QueueName": _name(r), "Attributes": attributes})]


def _table(r: DeclaredResource, i: Mapping[str, Any]) -> Calls:
    name = _name(r)
    key_schema = [{"AttributeName": i["hashKey"], "KeyType": "HASH"}]
    if i.get("rangeKey"):
        key_schema.append({"AttributeName": i["rangeKey"], "KeyType": "RANGE"})
    indexes = [
        {
            "IndexName": g["name"],
            "KeySchema": [
                {"AttributeName": k["attributeName"], "KeyType": k["keyType"]}
                for k in g["keySchemas"]
            ],
            "Projection": {
                "ProjectionType": g["projectionType"],
                **(
                    {"NonKeyAttributes": g["nonKeyAttributes"]} if g.get("nonKeyAttributes") else {}
                ),
            },
        }
        for g in i.get("globalSecondaryIndexes", [])
    ]
    create = {
        "TableName": name,
        "AttributeDefinitions": [
            {"AttributeName": a["name"], "AttributeType": a["type"]} for a in i["attributes"]
        ],
        "KeySchema": key_schema,
        "BillingMode": i["billingMode"],
        "SSESpecification": {"Enabled": bool((i.get("serverSideEncryption") or {}).get("enabled"))},
        "DeletionProtectionEnabled": bool(i.get("deletionProtectionEnabled")),
        **({"GlobalSecondaryIndexes": indexes} if indexes else {}),
    }
    pitr = i.get("pointInTimeRecovery") or {}
    calls: Calls = [
        ("dynamodb", "CreateTable", create),
        (
            "dynamodb",
            "UpdateContinuousBackups",
            {
                "TableName": name,
                "PointInTimeRecoverySpecification": {
                    "PointInTimeRecoveryEnabled": bool(pitr.get("enabled")),
                    **(
                        {"RecoveryPeriodInDays": pitr["recoveryPeriodInDays"]}
                        if "recoveryPeriodInDays" in pitr
                        else {}
                    ),
                },
            },
        ),
    ]
    if i.get("ttl"):
        ttl = {"Enabled": i["ttl"]["enabled"], "AttributeName": i["ttl"]["attributeName"]}
        calls.append(
            ("dynamodb", "UpdateTimeToLive", {"TableName": name, "TimeToLiveSpecification": ttl})
        )
    return calls


def _security_group(r: DeclaredResource, i: Mapping[str, Any]) -> Calls:
    def permissions(kind: str) -> list[dict[str, Any]]:
        return [
            {
                "IpProtocol": rule["protocol"],
                "FromPort": rule["fromPort"],
                "ToPort": rule["toPort"],
                "IpRanges": [
                    {
                        "CidrIp": c,
                        **({"Description": rule["description"]} if "description" in rule else {}),
                    }
                    for c in rule.get("cidrBlocks", [])
                ],
                "UserIdGroupPairs": [{"GroupId": g} for g in rule.get("securityGroups", [])],
            }
            for rule in i.get(kind, [])
        ]

    group_id = r.outputs["id"]
    calls: Calls = [
        (
            "ec2",
            "CreateSecurityGroup",
            {"GroupName": _name(r), "Description": i["description"], "VpcId": i["vpcId"]},
        )
    ]
    for kind, operation in (
        ("ingress", "AuthorizeSecurityGroupIngress"),
        ("egress", "AuthorizeSecurityGroupEgress"),
    ):
        if i.get(kind):
            calls.append(
                ("ec2", operation, {"GroupId": group_id, "IpPermissions": permissions(kind)})
            )
    return calls


def _route_table(r: DeclaredResource, i: Mapping[str, Any]) -> Calls:
    calls: Calls = [("ec2", "CreateRouteTable", {"VpcId": i["vpcId"]})]
    for route in i.get("routes", []):
        target = {k[:1].upper() + k[1:]: v for k, v in route.items() if k != "cidrBlock"}
        params = {"RouteTableId": r.outputs["id"], "DestinationCidrBlock": route["cidrBlock"]}
        calls.append(("ec2", "CreateRoute", params | target))
    return calls


def _task_definition(r: DeclaredResource, i: Mapping[str, Any]) -> Calls:
    keys = (
        "family", "cpu", "memory", "networkMode", "requiresCompatibilities", "executionRoleArn",
        "taskRoleArn", "runtimePlatform", "volumes",
    )  # fmt: skip
    params = {k: i[k] for k in keys if k in i}
    params["containerDefinitions"] = json.loads(i["containerDefinitions"])
    return [("ecs", "RegisterTaskDefinition", params)]


def _service(r: DeclaredResource, i: Mapping[str, Any]) -> Calls:
    network = i["networkConfiguration"]
    deployment = {
        "deploymentCircuitBreaker": i.get("deploymentCircuitBreaker"),
        "minimumHealthyPercent": i.get("deploymentMinimumHealthyPercent"),
        "maximumPercent": i.get("deploymentMaximumPercent"),
    }
    params = {
        "serviceName": _name(r),
        "cluster": i["cluster"],
        "taskDefinition": i["taskDefinition"],
        "desiredCount": i.get("desiredCount"),
        "launchType": i.get("launchType"),
        "networkConfiguration": {
            "awsvpcConfiguration": {
                "subnets": network["subnets"],
                "securityGroups": network.get("securityGroups", []),
                "assignPublicIp": "ENABLED" if network.get("assignPublicIp") else "DISABLED",
            }
        },
        "deploymentConfiguration": {k: v for k, v in deployment.items() if v is not None},
        "enableECSManagedTags": i.get("enableEcsManagedTags"),
        "propagateTags": i.get("propagateTags"),
        "loadBalancers": i.get("loadBalancers"),
        "healthCheckGracePeriodSeconds": i.get("healthCheckGracePeriodSeconds"),
        "serviceRegistries": [i["serviceRegistries"]] if i.get("serviceRegistries") else None,
    }
    return [("ecs", "CreateService", {k: v for k, v in params.items() if v is not None})]


def _load_balancer(r: DeclaredResource, i: Mapping[str, Any]) -> Calls:
    create = {
        "Name": _name(r),
        "Type": i["loadBalancerType"],
        "Scheme": "internal" if i.get("internal") else "internet-facing",
        "Subnets": i["subnets"],
        "SecurityGroups": i.get("securityGroups", []),
    }
    cross_zone = str(bool(i.get("enableCrossZoneLoadBalancing"))).lower()
    attributes = [{"Key": "load_balancing.cross_zone.enabled", "Value": cross_zone}]
    return [
        ("elbv2", "CreateLoadBalancer", create),
        (
            "elbv2",
            "ModifyLoadBalancerAttributes",
            {"LoadBalancerArn": r.outputs["arn"], "Attributes": attributes},
        ),
    ]


def _target_group(r: DeclaredResource, i: Mapping[str, Any]) -> Calls:
    health = i.get("healthCheck") or {}
    create = {
        "Name": _name(r),
        "Protocol": i["protocol"],
        "Port": i["port"],
        "VpcId": i["vpcId"],
        "TargetType": i["targetType"],
        "HealthCheckProtocol": health.get("protocol"),
        "HealthCheckIntervalSeconds": health.get("interval"),
        "HealthyThresholdCount": health.get("healthyThreshold"),
        "UnhealthyThresholdCount": health.get("unhealthyThreshold"),
    }
    attributes = {
        "deregistration_delay.timeout_seconds": i.get("deregistrationDelay"),
        "preserve_client_ip.enabled": i.get("preserveClientIp"),
    }
    modify = {
        "TargetGroupArn": r.outputs["arn"],
        "Attributes": [{"Key": k, "Value": str(v)} for k, v in attributes.items() if v is not None],
    }
    return [
        ("elbv2", "CreateTargetGroup", {k: v for k, v in create.items() if v is not None}),
        ("elbv2", "ModifyTargetGroupAttributes", modify),
    ]


def _secret(r: DeclaredResource, i: Mapping[str, Any]) -> Calls:
    window = i.get("recoveryWindowInDays", 30)
    delete: dict[str, Any] = {"SecretId": r.outputs["arn"]}
    delete |= (
        {"ForceDeleteWithoutRecovery": True} if window == 0 else {"RecoveryWindowInDays": window}
    )
    create = {"Name": _name(r), "Description": i.get("description"), "KmsKeyId": i.get("kmsKeyId")}
    return [
        ("secretsmanager", "CreateSecret", {k: v for k, v in create.items() if v is not None}),
        # Declared now, sent on `pulumi destroy`: a bad window fails the destroy.
        ("secretsmanager", "DeleteSecret", delete),
    ]


def _kms_key(r: DeclaredResource, i: Mapping[str, Any]) -> Calls:
    key_id = r.outputs["id"]
    calls: Calls = [("kms", "CreateKey", {"Description": i.get("description", "")})]
    if i.get("enableKeyRotation"):
        calls.append(("kms", "EnableKeyRotation", {"KeyId": key_id}))
    if "deletionWindowInDays" in i:
        window = {"KeyId": key_id, "PendingWindowInDays": i["deletionWindowInDays"]}
        calls.append(("kms", "ScheduleKeyDeletion", window))
    return calls


def _one(service: str, operation: str, build: Callable[[DeclaredResource], dict[str, Any]]):
    def calls(r: DeclaredResource, i: Mapping[str, Any]) -> Calls:
        return [(service, operation, build(r))]

    return calls


def _alarm(r: DeclaredResource) -> dict[str, Any]:
    i = integral(dict(r.inputs))
    keys = {
        "alarmDescription": "AlarmDescription", "namespace": "Namespace",
        "metricName": "MetricName", "statistic": "Statistic", "period": "Period",
        "evaluationPeriods": "EvaluationPeriods", "threshold": "Threshold",
        "comparisonOperator": "ComparisonOperator", "treatMissingData": "TreatMissingData",
        "alarmActions": "AlarmActions", "okActions": "OKActions",
    }  # fmt: skip
    params = {api: i[key] for key, api in keys.items() if key in i}
    params["AlarmName"] = _name(r)
    params["Dimensions"] = [{"Name": k, "Value": v} for k, v in sorted(i["dimensions"].items())]
    return params


CALLS: dict[str, Callable[[DeclaredResource, Mapping[str, Any]], Calls]] = {
    "aws:sqs/queue:Queue": _queue,
    "aws:dynamodb/table:Table": _table,
    "aws:ec2/securityGroup:SecurityGroup": _security_group,
    "aws:ec2/routeTable:RouteTable": _route_table,
    "aws:ecs/taskDefinition:TaskDefinition": _task_definition,
    "aws:ecs/service:Service": _service,
    "aws:lb/loadBalancer:LoadBalancer": _load_balancer,
    "aws:lb/targetGroup:TargetGroup": _target_group,
    "aws:secretsmanager/secret:Secret": _secret,
    "aws:kms/key:Key": _kms_key,
    "aws:cloudwatch/metricAlarm:MetricAlarm": _one("cloudwatch", "PutMetricAlarm", _alarm),
    "aws:lb/listener:Listener": _one(
        "elbv2",
        "CreateListener",
        lambda r: {
            "LoadBalancerArn": r.inputs["loadBalancerArn"],
            "Protocol": r.inputs["protocol"],
            "Port": integral(r.inputs["port"]),
            "DefaultActions": pascal(r.inputs["defaultActions"]),
        },
    ),
    "aws:secretsmanager/secretVersion:SecretVersion": _one(
        "secretsmanager",
        "PutSecretValue",
        lambda r: {"SecretId": r.inputs["secretId"], "SecretString": r.inputs["secretString"]},
    ),
    "aws:sns/topic:Topic": _one("sns", "CreateTopic", lambda r: {"Name": _name(r)}),
    "aws:sns/topicPolicy:TopicPolicy": _one(
        "sns",
        "SetTopicAttributes",
        lambda r: {
            "TopicArn": r.inputs["arn"],
            "AttributeName": "Policy",
            "AttributeValue": r.inputs["policy"],
        },
    ),
    "aws:sns/topicSubscription:TopicSubscription": _one(
        "sns",
        "Subscribe",
        lambda r: {
            "TopicArn": r.inputs["topic"],
            "Protocol": r.inputs["protocol"],
            "Endpoint": r.inputs["endpoint"],
        },
    ),
    "aws:cloudwatch/logGroup:LogGroup": lambda r, i: [
        ("logs", "CreateLogGroup", {"logGroupName": _name(r)}),
        (
            "logs",
            "PutRetentionPolicy",
            {"logGroupName": _name(r), "retentionInDays": i["retentionInDays"]},
        ),
    ],
    "aws:kms/alias:Alias": _one(
        "kms",
        "CreateAlias",
        lambda r: {"AliasName": _name(r), "TargetKeyId": r.inputs["targetKeyId"]},
    ),
    "aws:iam/role:Role": _one(
        "iam",
        "CreateRole",
        lambda r: {
            "RoleName": _name(r),
            "Description": r.inputs.get("description", ""),
            "AssumeRolePolicyDocument": r.inputs["assumeRolePolicy"],
        },
    ),
    "aws:iam/rolePolicy:RolePolicy": _one(
        "iam",
        "PutRolePolicy",
        lambda r: {
            "RoleName": r.inputs["role"],
            "PolicyName": _name(r),
            "PolicyDocument": r.inputs["policy"],
        },
    ),
    "aws:ec2/vpc:Vpc": _one("ec2", "CreateVpc", lambda r: {"CidrBlock": r.inputs["cidrBlock"]}),
    "aws:ec2/subnet:Subnet": _one(
        "ec2",
        "CreateSubnet",
        lambda r: {
            "VpcId": r.inputs["vpcId"],
            "CidrBlock": r.inputs["cidrBlock"],
            "AvailabilityZone": r.inputs["availabilityZone"],
        },
    ),
    "aws:ec2/eip:Eip": _one("ec2", "AllocateAddress", lambda r: {"Domain": r.inputs["domain"]}),
    "aws:ec2/internetGateway:InternetGateway": lambda r, i: [
        ("ec2", "CreateInternetGateway", {}),
        (
            "ec2",
            "AttachInternetGateway",
            {"InternetGatewayId": r.outputs["id"], "VpcId": i["vpcId"]},
        ),
    ],
    "aws:ec2/natGateway:NatGateway": _one(
        "ec2",
        "CreateNatGateway",
        lambda r: {"AllocationId": r.inputs["allocationId"], "SubnetId": r.inputs["subnetId"]},
    ),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": _one(
        "ec2",
        "AssociateRouteTable",
        lambda r: {"SubnetId": r.inputs["subnetId"], "RouteTableId": r.inputs["routeTableId"]},
    ),
    "aws:ec2/vpcEndpoint:VpcEndpoint": _one(
        "ec2",
        "CreateVpcEndpoint",
        lambda r: {
            api: r.inputs[key]
            for key, api in {
                "vpcId": "VpcId",
                "serviceName": "ServiceName",
                "vpcEndpointType": "VpcEndpointType",
                "subnetIds": "SubnetIds",
                "securityGroupIds": "SecurityGroupIds",
                "routeTableIds": "RouteTableIds",
                "privateDnsEnabled": "PrivateDnsEnabled",
                "policy": "PolicyDocument",
            }.items()
            if key in r.inputs
        },
    ),
    "aws:ecs/cluster:Cluster": _one(
        "ecs",
        "CreateCluster",
        lambda r: {"clusterName": _name(r), "settings": r.inputs.get("settings", [])},
    ),
    "aws:amp/workspace:Workspace": _one(
        "amp", "CreateWorkspace", lambda r: {"alias": r.inputs["alias"]}
    ),
    "aws:amp/ruleGroupNamespace:RuleGroupNamespace": _one(
        "amp",
        "CreateRuleGroupsNamespace",
        lambda r: {
            "workspaceId": r.inputs["workspaceId"],
            "name": _name(r),
            "data": r.inputs["data"].encode(),
        },
    ),
    "aws:amp/alertManagerDefinition:AlertManagerDefinition": _one(
        "amp",
        "CreateAlertManagerDefinition",
        lambda r: {"workspaceId": r.inputs["workspaceId"], "data": r.inputs["definition"].encode()},
    ),
    "aws:appautoscaling/target:Target": _one(
        "application-autoscaling",
        "RegisterScalableTarget",
        lambda r: pascal(
            {
                k: r.inputs[k]
                for k in (
                    "serviceNamespace",
                    "resourceId",
                    "scalableDimension",
                    "minCapacity",
                    "maxCapacity",
                )
            }
        ),
    ),
    "aws:appautoscaling/policy:Policy": _one(
        "application-autoscaling",
        "PutScalingPolicy",
        lambda r: {
            "PolicyName": _name(r),
            **pascal(
                {
                    k: r.inputs[k]
                    for k in (
                        "serviceNamespace",
                        "resourceId",
                        "scalableDimension",
                        "policyType",
                        "targetTrackingScalingPolicyConfiguration",
                    )
                    if k in r.inputs
                }
            ),
        },
    ),
    "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace": _one(
        "servicediscovery",
        "CreatePrivateDnsNamespace",
        lambda r: {
            "Name": _name(r),
            "Vpc": r.inputs["vpc"],
            "Description": r.inputs.get("description", ""),
        },
    ),
    "aws:servicediscovery/service:Service": _one(
        "servicediscovery",
        "CreateService",
        lambda r: {
            "Name": _name(r),
            "DnsConfig": {
                "NamespaceId": r.inputs["dnsConfig"]["namespaceId"],
                "RoutingPolicy": r.inputs["dnsConfig"]["routingPolicy"],
                "DnsRecords": [
                    {"Type": d["type"], "TTL": d["ttl"]}
                    for d in r.inputs["dnsConfig"]["dnsRecords"]
                ],
            },
        },
    ),
}


def unmapped_types(declaration: Declaration) -> set[str]:
    """Declared AWS types with no API call here and no reason in NOT_MAPPED."""
    declared = {r.type for r in declaration if r.custom and r.type.startswith("aws:")}
    return declared - set(CALLS) - set(NOT_MAPPED)


def api_calls(declaration: Declaration) -> Iterator[ApiCall]:
    for resource in declaration:
        build = CALLS.get(resource.type)
        if build is None:
            continue
        for service, operation, params in build(resource, integral(dict(resource.inputs))):
            yield ApiCall(resource.name, service, operation, integral(params))
