"""The whole stack, composed from one component per concern.

The data plane (queue, table, mTLS secrets) is always deployed. The compute plane (network,
ECS, load balancer, IAM, monitoring) follows `conveyor:deployCompute`, so a LocalStack stack
and the local emulator get exactly the data-plane resources a real stack gets.
"""

from __future__ import annotations

from typing import Any

import pulumi

from conveyor_infra.config import StackConfig
from conveyor_infra.mtls import MutualTls, MutualTlsArgs
from conveyor_infra.task_queue import TaskQueue, TaskQueueArgs
from conveyor_infra.task_table import TaskTable, TaskTableArgs


def build(config: StackConfig) -> dict[str, Any]:
    """Declare every resource of the stack; returns the stack outputs."""
    prefix = f"conveyor-{pulumi.get_stack()}"

    tasks = TaskQueue(
        "tasks",
        TaskQueueArgs(
            name_prefix=prefix,
            max_attempts=config.max_attempts,
            visibility_timeout_seconds=config.visibility_timeout_seconds,
            heartbeat_interval_seconds=config.heartbeat_interval_seconds,
            message_retention_seconds=config.message_retention_seconds,
            dlq_retention_seconds=config.dlq_retention_seconds,
            high_throughput=config.high_throughput_fifo,
        ),
    )
    table = TaskTable(
        "store",
        TaskTableArgs(
            name_prefix=prefix,
            pitr_recovery_days=config.pitr_recovery_days,
            deletion_protection=config.table_deletion_protection,
        ),
    )
    tls = MutualTls(
        "tls",
        MutualTlsArgs(
            name_prefix=prefix,
            tenants=config.tenants,
            server_dns_names=config.api_dns_names,
            ca_validity_days=config.tls_ca_validity_days,
            leaf_validity_days=config.tls_leaf_validity_days,
            renew_before_days=config.tls_renew_before_days,
            secret_recovery_window_days=config.secret_recovery_window_days,
        ),
    )
    return {
        "region": config.region,
        "queue_url": tasks.queue.url,
        "queue_arn": tasks.queue.arn,
        "queue_name": tasks.queue.name,
        "dlq_url": tasks.dlq.url,
        "dlq_arn": tasks.dlq.arn,
        "dlq_name": tasks.dlq.name,
        "table_name": table.table.name,
        "table_arn": table.table.arn,
        "tls_server_secret_arn": tls.server.secret.arn,
        "tls_client_secret_arns": {t: s.secret.arn for t, s in tls.clients.items()},
    }
