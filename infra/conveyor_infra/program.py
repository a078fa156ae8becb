"""The whole stack, composed from one component per concern.

The data plane (queue, table, mTLS secrets, DLQ alarm) is always deployed. The compute plane
(network, load balancer, monitoring, IAM, ECS, trace gateway, autoscaling) follows
`conveyor:deployCompute`,
so a LocalStack stack and the local emulator get the same data plane as a real stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import pulumi
import pulumi_aws as aws
from conveyor import schema
from conveyor.domain import LANES, lane_suffix

from conveyor_infra.alerting import Alerting, AlertingArgs
from conveyor_infra.autoscaling import Autoscaling, AutoscalingArgs
from conveyor_infra.config import StackConfig, secret_resource
from conveyor_infra.containers import TLS_SECRET_VARIABLES, DataPlaneRefs, read_collector_config
from conveyor_infra.ecs import EcsServices, EcsServicesArgs
from conveyor_infra.iam import ServiceIam, ServiceIamArgs
from conveyor_infra.load_balancer import ApiLoadBalancer, ApiLoadBalancerArgs
from conveyor_infra.monitoring import Monitoring, MonitoringArgs, rule_files
from conveyor_infra.mtls import MutualTls, MutualTlsArgs
from conveyor_infra.network import Network, NetworkArgs
from conveyor_infra.paths import REPO_ROOT
from conveyor_infra.permissions import (
    DataPlaneArns,
    endpoint_policy_documents,
    execution_role_statements,
    task_role_statements,
)
from conveyor_infra.task_queue import TaskQueue, TaskQueueArgs, task_queue_name
from conveyor_infra.task_table import TaskTable, TaskTableArgs
from conveyor_infra.topology import SERVICES, TRACE_GATEWAY
from conveyor_infra.trace_gateway import TraceGateway, TraceGatewayArgs, trace_gateway_endpoint


def build(config: StackConfig) -> dict[str, Any]:
    """Declare every resource of the stack; returns the stack outputs."""
    prefix = f"conveyor-{pulumi.get_stack()}"
    account_id = aws.get_caller_identity_output().account_id

    # A queue and DLQ per priority lane, the same policies each (the default lane's keep the
    # names from before lanes: task_queue_name).
    lanes = {
        lane: TaskQueue(
            task_queue_name(lane),
            TaskQueueArgs(
                name_prefix=prefix,
                visibility_timeout_seconds=config.visibility_timeout_seconds,
                message_retention_seconds=config.message_retention_seconds,
                dlq_retention_seconds=config.dlq_retention_seconds,
                high_throughput=config.high_throughput_fifo,
                lane=lane,
            ),
        )
        for lane in LANES
    }
    store = TaskTable(
        "store",
        TaskTableArgs(
            name_prefix=prefix,
            pitr_recovery_days=config.pitr_recovery_days,
            deletion_protection=config.table_deletion_protection,
        ),
    )
    alerting = Alerting(
        "alerting",
        AlertingArgs(
            name_prefix=prefix,
            account_id=account_id,
            dlq_names={lane: q.dlq.name for lane, q in lanes.items()},
            alarm_emails=config.alarm_emails,
        ),
    )
    outputs: dict[str, Any] = {
        "region": config.region,
        **lane_outputs(lanes),
        "table_name": store.table.name,
        "table_arn": store.table.arn,
        "alarm_topic_arn": alerting.topic.arn,
    }

    if not config.deploy_compute:
        tls = _mutual_tls(config, prefix, config.api_dns_names)
        return outputs | _tls_outputs(tls)
    return outputs | _compute_plane(config, prefix, account_id, lanes, store, alerting)


def lane_outputs(lanes: Mapping[str, TaskQueue]) -> dict[str, Any]:
    """Each lane's queue_url, queue_arn, queue_name, dlq_url, dlq_arn and dlq_name, suffixed
    by its lane (`lane_suffix`: the default lane's outputs keep their names)."""
    return {
        f"{kind}_{attribute}{lane_suffix(lane)}": getattr(getattr(q, kind), attribute)
        for lane, q in lanes.items()
        for kind in ("queue", "dlq")
        for attribute in ("url", "arn", "name")
    }


def _compute_plane(
    config: StackConfig,
    prefix: str,
    account_id: pulumi.Output[str],
    lanes: Mapping[str, TaskQueue],
    store: TaskTable,
    alerting: Alerting,
) -> dict[str, Any]:
    """Network, load balancer, mTLS, monitoring, IAM, ECS, trace gateway and autoscaling."""
    # Fail before declaring compute if a collector has no config.
    collector_config = read_collector_config(
        REPO_ROOT, config.collector_config_path, "collectorConfigPath"
    )
    gateway_config = read_collector_config(
        REPO_ROOT, config.gateway_config_path, "gatewayConfigPath"
    )
    network = Network(
        "network",
        NetworkArgs(
            name_prefix=prefix,
            region=config.region,
            vpc_cidr=config.vpc_cidr,
            availability_zones=config.availability_zones,
            nat_per_az=config.nat_gateways == "per-az",
            api_port=config.api_port,
            api_listener_port=config.api_listener_port,
            api_allowed_cidrs=config.allowed_api_cidrs(),
        ),
    )
    front = ApiLoadBalancer(
        "api-lb",
        ApiLoadBalancerArgs(
            name_prefix=prefix,
            vpc_id=network.vpc.id,
            subnet_ids=(
                network.public_subnet_ids
                if config.api_internet_facing
                else network.private_subnet_ids
            ),
            security_group_id=network.load_balancer_sg.id,
            internet_facing=config.api_internet_facing,
            listener_port=config.api_listener_port,
            target_port=config.api_port,
        ),
    )
    # Clients dial the NLB's DNS name unless they have their own: both go into the certificate.
    server_dns_names = front.load_balancer.dns_name.apply(
        lambda dns_name: [*config.api_dns_names, dns_name]
    )
    tls = _mutual_tls(config, prefix, server_dns_names)
    monitoring = Monitoring(
        "monitoring",
        MonitoringArgs(
            name_prefix=prefix,
            region=config.region,
            services=(*SERVICES, TRACE_GATEWAY),
            log_retention_days=config.log_retention_days,
            rule_files=rule_files(REPO_ROOT / config.prometheus_rules_dir),
            alarm_topic_arn=alerting.topic.arn,
        ),
    )
    arns = DataPlaneArns(
        table=store.table.arn,
        by_tenant_index=store.index_arn(schema.GSI_BY_TENANT),
        outbox_index=store.index_arn(schema.GSI_OUTBOX),
        queued_index=store.index_arn(schema.GSI_QUEUED),
        queues=[q.queue.arn for q in lanes.values()],
        dlqs=[q.dlq.arn for q in lanes.values()],
        prometheus_workspace=monitoring.workspace.arn,
    )
    assert config.image is not None  # guaranteed by StackConfig when deploy_compute is set
    # ECS reads a container's `secrets` with the task's EXECUTION role, before the code runs,
    # so that role (and no task role) may read them: the API's TLS secret, the worker's own.
    secret_arns = {
        "api": [tls.server.secret.arn],
        "worker": [
            account_id.apply(partial(secret_resource, reference, config.region))
            for reference in config.worker.secrets.values()
        ],
    }
    identities_statements = {
        service: (
            task_role_statements(service, arns),
            execution_role_statements(
                region=config.region,
                images=(
                    [config.collector_image]
                    if service == TRACE_GATEWAY
                    else [config.image, config.collector_image]
                ),
                log_group_arn=monitoring.log_groups[service].arn,
                secret_arns=secret_arns.get(service, []),
                # The handlers' secrets use their owners' keys: granting ours would not help.
                secrets_key_arn=tls.kms_key.arn if service == "api" else None,
            ),
        )
        for service in (*SERVICES, TRACE_GATEWAY)
    }
    identities = {
        service: ServiceIam(
            f"{service}-iam",
            ServiceIamArgs(
                name_prefix=prefix,
                service=service,
                account_id=account_id,
                region=config.region,
                task_statements=task_statements,
                execution_statements=execution_statements,
            ),
        )
        for service, (task_statements, execution_statements) in identities_statements.items()
    }
    role_statements = {
        f"{service} {kind}": statements
        for service, pair in identities_statements.items()
        for kind, statements in zip(("task", "execution"), pair, strict=True)
    }
    network.add_endpoints(
        {
            endpoint: pulumi.Output.json_dumps(policy)
            for endpoint, policy in endpoint_policy_documents(
                config.region, account_id, role_statements
            ).items()
        }
    )
    # What a task needs before it can start (pull its images, write its logs, read its secrets,
    # reach AWS): `pulumi up` creates it first, so the first tasks do not fail.
    start_dependencies: dict[str, list[pulumi.Resource]] = {
        service: [
            *identities[service].policies,
            *network.private_routes,
            *network.endpoints,
            monitoring.log_groups[service],
            *([tls.server.version] if service == "api" else []),
        ]
        for service in (*SERVICES, TRACE_GATEWAY)
    }
    ecs = EcsServices(
        "ecs",
        EcsServicesArgs(
            name_prefix=prefix,
            config=config,
            refs=DataPlaneRefs(
                table_name=store.table.name,
                queue_urls={lane: (q.queue.url, q.dlq.url) for lane, q in lanes.items()},
            ),
            collector_config=collector_config,
            log_group_names={s: g.name for s, g in monitoring.log_groups.items()},
            remote_write_url=monitoring.remote_write_url,
            trace_gateway_endpoint=trace_gateway_endpoint(prefix),
            identities=identities,
            subnet_ids=network.private_subnet_ids,
            security_group_ids={s: sg.id for s, sg in network.service_sgs.items()},
            api_target_group_arn=front.target_group.arn,
            api_listener=front.listener,
            start_dependencies=start_dependencies,
            secrets={
                "api": {
                    variable: tls.server.value_from(json_key)
                    for variable, json_key in TLS_SECRET_VARIABLES.items()
                },
                "worker": config.worker.secrets,
            },
        ),
    )
    gateway = TraceGateway(
        "traces",
        TraceGatewayArgs(
            name_prefix=prefix,
            config=config,
            gateway_config=gateway_config,
            cluster_arn=ecs.cluster.arn,
            vpc_id=network.vpc.id,
            subnet_ids=network.private_subnet_ids,
            security_group_id=network.service_sgs[TRACE_GATEWAY].id,
            identity=identities[TRACE_GATEWAY],
            log_group_name=monitoring.log_groups[TRACE_GATEWAY].name,
            start_dependencies=start_dependencies[TRACE_GATEWAY],
        ),
    )
    Autoscaling(
        "autoscaling",
        AutoscalingArgs(
            cluster_name=ecs.cluster.name,
            api_service_name=ecs.services["api"].name,
            worker_service_name=ecs.services["worker"].name,
            queue_names={lane: q.queue.name for lane, q in lanes.items()},
            api=config.api,
            worker=config.worker,
        ),
    )
    return _tls_outputs(tls) | {
        "cluster_name": ecs.cluster.name,
        "api_service_name": ecs.services["api"].name,
        "relay_service_name": ecs.services["relay"].name,
        "worker_service_name": ecs.services["worker"].name,
        "trace_gateway_service_name": gateway.service.name,
        "trace_gateway_endpoint": trace_gateway_endpoint(prefix),
        "api_endpoint": front.endpoint,
        "amp_workspace_id": monitoring.workspace.id,
        "amp_remote_write_url": monitoring.remote_write_url,
        "log_group_names": {s: g.name for s, g in monitoring.log_groups.items()},
        "vpc_id": network.vpc.id,
    }


def _mutual_tls(
    config: StackConfig, prefix: str, server_dns_names: pulumi.Input[list[str]]
) -> MutualTls:
    return MutualTls(
        "tls",
        MutualTlsArgs(
            name_prefix=prefix,
            tenants=config.tenants,
            server_dns_names=server_dns_names,
            ca_validity_days=config.tls_ca_validity_days,
            leaf_validity_days=config.tls_leaf_validity_days,
            renew_before_days=config.tls_renew_before_days,
            secret_recovery_window_days=config.secret_recovery_window_days,
        ),
    )


def _tls_outputs(tls: MutualTls) -> dict[str, Any]:
    return {
        "tls_server_secret_arn": tls.server.secret.arn,
        "tls_client_secret_arns": {t: s.secret.arn for t, s in tls.clients.items()},
    }
