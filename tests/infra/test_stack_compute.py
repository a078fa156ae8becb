"""Network, ECS, load balancer, autoscaling and monitoring, as each compute stack declares them."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
from conveyor import settings
from conveyor.runtime import TaskRuntime
from conveyor_dev.emulators.declared import Declaration, DeclarationError, declare
from conveyor_infra.autoscaling import visible_id
from conveyor_infra.config import stack_key
from conveyor_infra.containers import COLLECTOR, COLLECTOR_CONFIG_VARIABLE, TLS_SECRET_VARIABLES
from conveyor_infra.paths import REPO_ROOT
from conveyor_infra.topology import OTLP_GRPC_PORT, TRACE_GATEWAY
from stack_support import COMPUTE_STACKS, SERVICES, STACKS, container, pairs, stack_config

SETTINGS_MODELS: dict[str, type[settings.BaseSettings]] = {
    "api": settings.ApiSettings,
    "relay": settings.RelaySettings,
    "worker": settings.WorkerSettings,
}


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_belongs_to_a_conveyor_component(
    declarations: dict[str, Declaration], stack: str
) -> None:
    declaration = declarations[stack]
    components = {r.urn for r in declaration if r.type.startswith("conveyor:")}
    for resource in declaration:
        if resource.custom:
            assert resource.parent in components, f"{resource.name} is not in a component"
        else:
            assert resource.type.startswith("conveyor:")


def test_localstack_deploys_only_the_data_plane(declarations: dict[str, Declaration]) -> None:
    modules = {r.type.split("/")[0] for r in declarations["localstack"] if r.custom}
    assert modules == {
        "aws:sqs",
        "aws:dynamodb",
        "aws:secretsmanager",
        "aws:kms",
        "aws:sns",
        "aws:cloudwatch",
        "tls:index",
    }
    assert {r.type for r in declarations["localstack"] if r.type.startswith("aws:cloudwatch")} == {
        "aws:cloudwatch/metricAlarm:MetricAlarm"
    }


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
def test_network_has_private_subnets_nat_per_stack_and_the_vpc_endpoints(
    declarations: dict[str, Declaration], stack: str
) -> None:
    declaration = declarations[stack]
    zones = stack_config(stack).availability_zones
    nats = 1 if stack_config(stack).nat_gateways == "single" else zones
    subnets = declaration.of_type("aws:ec2/subnet:Subnet")
    private = [s for s in subnets if "-private-" in s.name]
    assert len(private) == len(subnets) - len(private) == zones
    assert len({s.inputs["availabilityZone"] for s in private}) == zones
    assert len(declaration.of_type("aws:ec2/natGateway:NatGateway")) == nats

    endpoints = {
        e.inputs["serviceName"].rsplit(".", 1)[-1]
        if e.inputs["vpcEndpointType"] == "Gateway"
        else e.inputs["serviceName"].split(".", 3)[-1]: e.inputs["vpcEndpointType"]
        for e in declaration.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    }
    assert endpoints == {
        "sqs": "Interface",
        "secretsmanager": "Interface",
        "ecr.api": "Interface",
        "ecr.dkr": "Interface",
        "logs": "Interface",
        "dynamodb": "Gateway",
        "s3": "Gateway",
    }
    private_ids = {s.outputs["id"] for s in private}
    for service in SERVICES:
        network = declaration.named(f"ecs-{service}").inputs["networkConfiguration"]
        assert network["assignPublicIp"] is False
        assert set(network["subnets"]) == private_ids


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
def test_task_definitions_run_the_service_commands_read_only_and_non_root(
    declarations: dict[str, Declaration], stack: str
) -> None:
    declaration = declarations[stack]
    task_definition = declaration.named("ecs-api-task")
    assert (int(task_definition.inputs["cpu"]), int(task_definition.inputs["memory"])) == (
        (stack_config(stack).api.cpu, stack_config(stack).api.memory)
    )
    for service in SERVICES:
        inputs = declaration.named(f"ecs-{service}-task").inputs
        assert inputs["requiresCompatibilities"] == ["FARGATE"]
        assert inputs["networkMode"] == "awsvpc"
        app = container(declaration, service, service)
        assert app["command"] == ["python", "-m", f"conveyor.{service}"]
        assert app["image"].endswith("/conveyor:0.1.0")
        for each in (app, container(declaration, service, COLLECTOR)):
            assert each["readonlyRootFilesystem"] is True
            assert each["user"].split(":")[0] not in ("", "0", "root")
    api = container(declaration, "api", "api")
    assert api["healthCheck"]["command"] == ["CMD", "python", "-m", "conveyor.healthcheck"]


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
def test_each_task_has_a_collector_sidecar_configured_from_the_observability_file(
    declarations: dict[str, Declaration], stack: str
) -> None:
    declaration = declarations[stack]
    expected_config = (REPO_ROOT / "observability/collector/ecs-sidecar.yaml").read_text()
    (workspace,) = declaration.of_type("aws:amp/workspace:Workspace")
    for service in SERVICES:
        collector = container(declaration, service, COLLECTOR)
        # ECR Public (no Docker Hub pull limits), pinned by digest.
        assert re.fullmatch(
            r"public\.ecr\.aws/aws-observability/aws-otel-collector@sha256:[0-9a-f]{64}",
            collector["image"],
        )
        # A hard limit, so memory_limiter's percentages are of the sidecar, not the task.
        assert collector["memory"] == 128
        task_memory = int(declaration.named(f"ecs-{service}-task").inputs["memory"])
        assert collector["memory"] * 2 <= task_memory
        assert collector["command"] == [f"--config=env:{COLLECTOR_CONFIG_VARIABLE}"]
        environment = pairs(collector["environment"])
        assert environment[COLLECTOR_CONFIG_VARIABLE] == expected_config
        assert environment["AMP_REMOTE_WRITE_ENDPOINT"] == (
            workspace.outputs["prometheusEndpoint"] + "api/v1/remote_write"
        )
        app_environment = pairs(container(declaration, service, service)["environment"])
        assert environment["CONVEYOR_METRICS_TARGET"] == app_environment["CONVEYOR_METRICS_LISTEN"]


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
def test_sidecars_send_traces_to_one_gateway_found_through_cloud_map(
    declarations: dict[str, Declaration], stack: str
) -> None:
    declaration = declarations[stack]
    (namespace,) = declaration.of_type(
        "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace"
    )
    (discovery,) = declaration.of_type("aws:servicediscovery/service:Service")
    assert discovery.inputs["dnsConfig"]["namespaceId"] == namespace.outputs["id"]
    assert namespace.inputs["vpc"] == declaration.named("network-vpc").outputs["id"]
    endpoint = f"{discovery.inputs['name']}.{namespace.inputs['name']}:{OTLP_GRPC_PORT}"
    assert declaration.outputs["trace_gateway_endpoint"] == endpoint
    for service in SERVICES:
        sidecar = pairs(container(declaration, service, COLLECTOR)["environment"])
        assert sidecar["OTEL_GATEWAY_ENDPOINT"] == endpoint

    gateway_service = declaration.named("traces-service")
    # Tail sampling needs every span of a trace in one process.
    assert gateway_service.inputs["desiredCount"] == 1
    assert gateway_service.inputs["serviceRegistries"] == {"registryArn": discovery.outputs["arn"]}
    (gateway,) = json.loads(declaration.named("traces-task").inputs["containerDefinitions"])
    assert pairs(gateway["environment"])[COLLECTOR_CONFIG_VARIABLE] == (
        (REPO_ROOT / "observability/collector/gateway.yaml").read_text()
    )
    assert gateway["command"] == [f"--config=env:{COLLECTOR_CONFIG_VARIABLE}"]
    assert gateway["portMappings"][0]["containerPort"] == OTLP_GRPC_PORT
    assert gateway["readonlyRootFilesystem"] is True

    groups = {g.name: g for g in declaration.of_type("aws:ec2/securityGroup:SecurityGroup")}
    service_group_ids = sorted(groups[f"network-{s}"].outputs["id"] for s in SERVICES)
    (ingress,) = groups[f"network-{TRACE_GATEWAY}"].inputs["ingress"]
    assert (ingress["fromPort"], sorted(ingress["securityGroups"])) == (
        OTLP_GRPC_PORT,
        service_group_ids,
    )
    for service in SERVICES:
        ports = {rule["fromPort"] for rule in groups[f"network-{service}"].inputs["egress"]}
        assert ports == {443, OTLP_GRPC_PORT}


def _load_settings(
    declaration: Declaration, service: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, str], dict[str, str], settings.BaseSettings]:
    """The service container's environment and secrets, and its settings loaded from them."""
    app = container(declaration, service, service)
    environment = pairs(app["environment"])
    secrets = pairs(app["secrets"], "valueFrom")
    for name in os.environ:
        if name.startswith(("CONVEYOR_", "AWS_")):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    for name in secrets:
        monkeypatch.setenv(name, f"pem from {name}")
    return environment, secrets, settings.load(SETTINGS_MODELS[service])


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
@pytest.mark.parametrize("service", SERVICES)
def test_container_settings_are_exactly_what_conveyor_settings_loads(
    declarations: dict[str, Declaration],
    stack: str,
    service: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The service's own settings model accepts the container's environment + secrets."""
    environment, secrets, loaded = _load_settings(declarations[stack], service, monkeypatch)
    model = SETTINGS_MODELS[service]
    known = {
        str(info.validation_alias.choices[0])
        if isinstance(info.validation_alias, settings.AliasChoices)
        else settings.PREFIX + field.upper()
        for field, info in model.model_fields.items()
    }
    # The handlers' own variables (worker.env / worker.secrets) are theirs, not Conveyor's.
    handlers = stack_config(stack).worker
    own = set(handlers.env) | set(handlers.secrets) if service == "worker" else set()
    assert (set(environment) | set(secrets)) - own <= known
    assert loaded.table_name == f"conveyor-{stack}-tasks"  # type: ignore[attr-defined]
    if service == "worker":
        assert environment["CONVEYOR_VISIBILITY_TIMEOUT_SECONDS"] == "30"
        queue = declarations[stack].named("tasks-queue")
        assert queue.inputs["visibilityTimeoutSeconds"] == int(
            environment["CONVEYOR_VISIBILITY_TIMEOUT_SECONDS"]
        )


# A value for every runtime knob, none its default, all within the rules.
KNOB_VALUES = {
    "default_max_attempts": "7",
    "visibility_timeout_seconds": "60",
    "heartbeat_interval_seconds": "7.5",
    "lease_seconds": "45",
    "backoff_base_seconds": "2",
    "backoff_max_seconds": "120",
    "shutdown_grace_seconds": "40",
    "stop_timeout_seconds": "50",
    "tenant_submits_per_second": "12.5",
    "tenant_submit_burst": "30",
    "tenant_max_streams": "3",
    "tenant_max_queued_tasks": "500",
    "tenant_max_queue_age_seconds": "45",
}


def test_every_runtime_knob_a_service_reads_comes_from_the_stack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert set(KNOB_VALUES) == set(TaskRuntime.model_fields)
    wanted = TaskRuntime.model_validate(KNOB_VALUES)
    declaration = declare(
        "dev", {f"conveyor:{stack_key(field)}": value for field, value in KNOB_VALUES.items()}
    )
    read = set()
    for service in SERVICES:
        _, _, loaded = _load_settings(declaration, service, monkeypatch)
        for field in set(TaskRuntime.model_fields) & set(type(loaded).model_fields):
            assert getattr(loaded, field) == getattr(wanted, field), (service, field)
            read.add(field)
        assert container(declaration, service, service)["stopTimeout"] == 50
    assert read == set(TaskRuntime.model_fields)  # each knob is some service's setting
    assert declaration.named("tasks-queue").inputs["visibilityTimeoutSeconds"] == 60


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
def test_tls_material_reaches_only_the_api_and_only_through_secrets(
    declarations: dict[str, Declaration], stack: str
) -> None:
    declaration = declarations[stack]
    server = declaration.named("tls-server")
    version = declaration.named("tls-server-value")
    api = container(declaration, "api", "api")
    assert pairs(api["secrets"], "valueFrom") == {
        variable: f"{server.outputs['arn']}:{json_key}::{version.outputs['versionId']}"
        for variable, json_key in TLS_SECRET_VARIABLES.items()
    }
    assert not set(TLS_SECRET_VARIABLES) & set(pairs(api["environment"]))
    for service in ("relay", "worker"):
        assert container(declaration, service, service)["secrets"] == []


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
def test_grpc_goes_through_an_nlb_tcp_listener_so_mtls_reaches_the_api(
    declarations: dict[str, Declaration], stack: str
) -> None:
    declaration = declarations[stack]
    (nlb,) = declaration.of_type("aws:lb/loadBalancer:LoadBalancer")
    (listener,) = declaration.of_type("aws:lb/listener:Listener")
    (targets,) = declaration.of_type("aws:lb/targetGroup:TargetGroup")
    assert nlb.inputs["loadBalancerType"] == "network"
    assert listener.inputs["protocol"] == "TCP"
    assert listener.inputs["loadBalancerArn"] == nlb.outputs["arn"]
    assert listener.inputs["defaultActions"] == [
        {"type": "forward", "targetGroupArn": targets.outputs["arn"]}
    ]
    assert (targets.inputs["protocol"], targets.inputs["targetType"]) == ("TCP", "ip")
    assert targets.inputs["healthCheck"]["protocol"] == "TCP"
    api_port = targets.inputs["port"]
    assert container(declaration, "api", "api")["portMappings"][0]["containerPort"] == api_port
    service = declaration.named("ecs-api")
    assert service.inputs["loadBalancers"] == [
        {
            "targetGroupArn": targets.outputs["arn"],
            "containerName": "api",
            "containerPort": api_port,
        }
    ]
    # The server certificate names the address clients dial.
    assert nlb.outputs["dnsName"] in declaration.named("tls-server-csr").inputs["dnsNames"]
    assert declarations[stack].outputs["api_endpoint"] == f"{nlb.outputs['dnsName']}:443"


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
def test_workers_scale_on_backlog_per_task_and_the_api_on_cpu(
    declarations: dict[str, Declaration], stack_files: dict[str, Any], stack: str
) -> None:
    declaration = declarations[stack]
    worker = stack_config(stack).worker  # the stack file's values, defaults filled in
    targets = {
        t.inputs["resourceId"]: t for t in declaration.of_type("aws:appautoscaling/target:Target")
    }
    worker_target = targets[f"service/conveyor-{stack}/conveyor-{stack}-worker"]
    assert (worker_target.inputs["minCapacity"], worker_target.inputs["maxCapacity"]) == (
        worker.min_count,
        worker.max_count,
    )
    assert f"service/conveyor-{stack}/conveyor-{stack}-api" in targets

    worker_policy = declaration.named("autoscaling-worker-backlog").inputs
    tracking = worker_policy["targetTrackingScalingPolicyConfiguration"]
    assert worker_policy["resourceId"] == worker_target.inputs["resourceId"]
    assert tracking["targetValue"] == worker.backlog_per_task
    metrics = {m["id"]: m for m in tracking["customizedMetricSpecification"]["metrics"]}
    running = metrics["running"]["metricStat"]["metric"]
    # Every lane's backlog: the default lane's queue (named as before lanes) and the high one's.
    for lane, queue in (
        ("default", f"conveyor-{stack}-tasks.fifo"),
        ("high", f"conveyor-{stack}-tasks-high.fifo"),
    ):
        visible = metrics[visible_id(lane)]["metricStat"]["metric"]
        assert (visible["namespace"], visible["metricName"]) == (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
        )
        assert visible["dimensions"] == [{"name": "QueueName", "value": queue}]
    assert (running["namespace"], running["metricName"]) == (
        "ECS/ContainerInsights",
        "RunningTaskCount",
    )
    assert metrics["backlog_per_task"]["expression"] == "(visible_high + visible) / running"
    assert [m["id"] for m in metrics.values() if m["returnData"]] == ["backlog_per_task"]

    api_policy = declaration.named("autoscaling-api-cpu").inputs
    assert api_policy["targetTrackingScalingPolicyConfiguration"][
        "predefinedMetricSpecification"
    ] == {"predefinedMetricType": "ECSServiceAverageCPUUtilization"}
    (cluster,) = declaration.of_type("aws:ecs/cluster:Cluster")
    assert cluster.inputs["settings"] == [{"name": "containerInsights", "value": "enabled"}]


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
def test_monitoring_has_log_retention_amp_rules_from_every_rule_file_and_alertmanager(
    declarations: dict[str, Declaration], stack: str
) -> None:
    declaration = declarations[stack]
    log_groups = {
        g.inputs["name"]: g for g in declaration.of_type("aws:cloudwatch/logGroup:LogGroup")
    }
    assert set(log_groups) == {f"/ecs/conveyor-{stack}/{s}" for s in (*SERVICES, TRACE_GATEWAY)}
    assert {g.inputs["retentionInDays"] for g in log_groups.values()} == {
        stack_config(stack).log_retention_days
    }
    (workspace,) = declaration.of_type("aws:amp/workspace:Workspace")
    rule_files = sorted((REPO_ROOT / "observability/rules").glob("*.yaml"))
    assert rule_files, "the observability generator writes observability/rules/*.yaml"
    namespaces = {
        n.inputs["name"]: n
        for n in declaration.of_type("aws:amp/ruleGroupNamespace:RuleGroupNamespace")
    }
    assert set(namespaces) == {f.stem for f in rule_files}
    for rule_file in rule_files:
        assert namespaces[rule_file.stem].inputs["data"] == rule_file.read_text()
        assert namespaces[rule_file.stem].inputs["workspaceId"] == workspace.outputs["id"]
    (alertmanager,) = declaration.of_type("aws:amp/alertManagerDefinition:AlertManagerDefinition")
    (topic,) = declaration.of_type("aws:sns/topic:Topic")
    assert f"topic_arn: {topic.outputs['arn']}" in alertmanager.inputs["definition"]


@pytest.mark.parametrize("stack", STACKS)
def test_stack_outputs_name_everything_services_and_runbooks_need(
    declarations: dict[str, Declaration], stack: str
) -> None:
    outputs = declarations[stack].outputs
    data_plane = {"queue_url", "dlq_url", "table_name", "alarm_topic_arn", "tls_server_secret_arn"}
    compute = {
        "cluster_name",
        "api_service_name",
        "relay_service_name",
        "worker_service_name",
        "api_endpoint",
        "amp_workspace_id",
        "log_group_names",
    }
    assert data_plane <= set(outputs)
    assert (compute <= set(outputs)) is (stack != "localstack")
    assert outputs["queue_url"] == declarations[stack].named("tasks-queue").outputs["url"]
    # Each other lane's outputs carry its name; the default lane's keep theirs.
    for kind in ("queue", "dlq"):
        for attribute in ("url", "arn", "name"):
            assert (
                outputs[f"{kind}_{attribute}_high"]
                == (declarations[stack].named(f"tasks-high-{kind}").outputs[attribute])
            )
    if stack != "localstack":
        assert outputs["worker_service_name"] == f"conveyor-{stack}-worker"
        assert set(outputs["log_group_names"]) == {*SERVICES, TRACE_GATEWAY}


def test_a_missing_collector_config_stops_compute_with_a_clear_error() -> None:
    with pytest.raises(DeclarationError) as failure:
        declare("dev", {"conveyor:collectorConfigPath": "observability/collector/absent.yaml"})
    assert "observability/collector/absent.yaml does not exist" in str(failure.value)
    # Without compute the file is not needed at all.
    declaration = declare(
        "dev",
        {
            "conveyor:collectorConfigPath": "observability/collector/absent.yaml",
            "conveyor:deployCompute": "false",
        },
    )
    assert not declaration.of_type("aws:ecs/service:Service")
    assert declaration.outputs["queue_url"].endswith("/conveyor-dev-tasks.fifo")


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
def test_each_service_waits_for_what_its_first_tasks_need_and_rolls_back(
    declarations: dict[str, Declaration], stack: str
) -> None:
    """First deploy: role policies, egress routes, VPC endpoints, the log group and (API) the
    TLS secret exist before ECS starts a task; a failing deployment rolls back and fails
    `pulumi up` (steady state is awaited)."""
    declaration = declarations[stack]
    urns = {r.name: r.urn for r in declaration}
    routes = {
        r.urn
        for r in declaration
        if r.type.startswith("aws:ec2/routeTable") and "-private-" in r.name
    }
    endpoints = {r.urn for r in declaration.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")}
    assert len(endpoints) == 7 and len(routes) == 2 * stack_config(stack).availability_zones
    for service, ecs_name in {
        **{s: f"ecs-{s}" for s in SERVICES},
        TRACE_GATEWAY: "traces-service",
    }.items():
        ecs = declaration.named(ecs_name)
        needs = {
            urns[f"{service}-iam-task-policy"],
            urns[f"{service}-iam-execution-policy"],
            urns[f"monitoring-{service}-logs"],
            *routes,
            *endpoints,
        }
        if service == "api":
            needs.add(urns["tls-server-value"])
        assert needs <= set(ecs.dependencies), f"{ecs_name} misses {needs - set(ecs.dependencies)}"
        assert ecs.inputs["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
        assert ecs.inputs["waitForSteadyState"] is True


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
def test_vpc_endpoints_let_through_only_this_stacks_grants(
    declarations: dict[str, Declaration], stack: str
) -> None:
    declaration = declarations[stack]
    account = declaration.outputs["queue_arn"].split(":")[4]
    granted = {
        (action, resource)
        for policy in declaration.of_type("aws:iam/rolePolicy:RolePolicy")
        for statement in json.loads(policy.inputs["policy"])["Statement"]
        for action in statement["Action"]
        for resource in statement["Resource"]
    }
    for endpoint in declaration.of_type("aws:ec2/vpcEndpoint:VpcEndpoint"):
        document = json.loads(endpoint.inputs["policy"])
        service = endpoint.inputs["serviceName"].split(".", 3)[-1]
        assert document["Statement"], endpoint.name
        for statement in document["Statement"]:
            assert statement["Effect"] == "Allow" and statement["Principal"] == "*"
            if service == "s3":
                assert statement["Action"] == ["s3:GetObject"]
                assert statement["Resource"] == [
                    f"arn:aws:s3:::prod-{declaration.outputs['region']}-starport-layer-bucket/*"
                ]
                continue
            assert statement["Condition"] == {"StringEquals": {"aws:PrincipalAccount": account}}
            prefix = {"ecr.api": "ecr", "ecr.dkr": "ecr"}.get(service, service)
            for action in statement["Action"]:
                assert action.startswith(f"{prefix}:")
                for resource in statement["Resource"]:
                    assert (action, resource) in granted


def test_the_task_modules_reach_the_api_and_the_worker_as_one_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    declaration = declare("dev", {"conveyor:taskModules": '["invoicing.tasks", "conveyor_x"]'})
    for service in SERVICES:
        environment, _, loaded = _load_settings(declaration, service, monkeypatch)
        if service in ("api", "worker"):
            assert environment["CONVEYOR_TASK_MODULES"] == "invoicing.tasks,conveyor_x"
            assert loaded.task_modules == ("invoicing.tasks", "conveyor_x")  # type: ignore[attr-defined]
        else:
            assert "CONVEYOR_TASK_MODULES" not in environment
