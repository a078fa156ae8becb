"""Autoscaling: workers follow the queue backlog per running task, the API follows CPU."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
from conveyor.domain import LANES, lane_suffix

from conveyor_infra.config import ApiServiceConfig, WorkerServiceConfig


def visible_id(lane: str) -> str:
    """The metric-math id of `lane`'s visible messages."""
    return f"visible{lane_suffix(lane)}"


# Every lane's backlog counts: a worker serves them all.
BACKLOG_PER_TASK_EXPRESSION = f"({' + '.join(visible_id(lane) for lane in LANES)}) / running"


@dataclass(frozen=True)
class AutoscalingArgs:
    cluster_name: pulumi.Input[str]
    api_service_name: pulumi.Input[str]
    worker_service_name: pulumi.Input[str]
    queue_names: Mapping[str, pulumi.Input[str]]  # per lane
    api: ApiServiceConfig
    worker: WorkerServiceConfig


def backlog_per_task_metrics(
    queue_names: Mapping[str, pulumi.Input[str]],
    cluster_name: pulumi.Input[str],
    service_name: pulumi.Input[str],
) -> list[Any]:
    """Metric math: visible messages of every lane's queue / running worker tasks (Container
    Insights).

    The divisor is never zero because the worker service keeps at least one task (minCount >= 1).
    """
    return [
        *(
            {
                "id": visible_id(lane),
                "return_data": False,
                "metric_stat": {
                    "stat": "Sum",
                    "metric": {
                        "namespace": "AWS/SQS",
                        "metric_name": "ApproximateNumberOfMessagesVisible",
                        "dimensions": [{"name": "QueueName", "value": queue_names[lane]}],
                    },
                },
            }
            for lane in LANES
        ),
        {
            "id": "running",
            "return_data": False,
            "metric_stat": {
                "stat": "Average",
                "metric": {
                    "namespace": "ECS/ContainerInsights",
                    "metric_name": "RunningTaskCount",
                    "dimensions": [
                        {"name": "ClusterName", "value": cluster_name},
                        {"name": "ServiceName", "value": service_name},
                    ],
                },
            },
        },
        {
            "id": "backlog_per_task",
            "label": "Visible messages per running worker task",
            "expression": BACKLOG_PER_TASK_EXPRESSION,
            "return_data": True,
        },
    ]


class Autoscaling(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: AutoscalingArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("conveyor:compute:Autoscaling", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        worker = self._target(
            f"{name}-worker", args.cluster_name, args.worker_service_name, args.worker
        )
        aws.appautoscaling.Policy(
            f"{name}-worker-backlog",
            policy_type="TargetTrackingScaling",
            resource_id=worker.resource_id,
            scalable_dimension=worker.scalable_dimension,
            service_namespace=worker.service_namespace,
            target_tracking_scaling_policy_configuration={
                "target_value": args.worker.backlog_per_task,
                "scale_out_cooldown": 60,
                "scale_in_cooldown": 300,
                "customized_metric_specification": {
                    "metrics": backlog_per_task_metrics(
                        args.queue_names, args.cluster_name, args.worker_service_name
                    )
                },
            },
            opts=child,
        )

        api = self._target(f"{name}-api", args.cluster_name, args.api_service_name, args.api)
        aws.appautoscaling.Policy(
            f"{name}-api-cpu",
            policy_type="TargetTrackingScaling",
            resource_id=api.resource_id,
            scalable_dimension=api.scalable_dimension,
            service_namespace=api.service_namespace,
            target_tracking_scaling_policy_configuration={
                "target_value": args.api.cpu_target_percent,
                "scale_out_cooldown": 60,
                "scale_in_cooldown": 300,
                "predefined_metric_specification": {
                    "predefined_metric_type": "ECSServiceAverageCPUUtilization"
                },
            },
            opts=child,
        )
        self.register_outputs({})

    def _target(
        self,
        resource_name: str,
        cluster_name: pulumi.Input[str],
        service_name: pulumi.Input[str],
        bounds: ApiServiceConfig | WorkerServiceConfig,
    ) -> aws.appautoscaling.Target:
        return aws.appautoscaling.Target(
            resource_name,
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=pulumi.Output.concat("service/", cluster_name, "/", service_name),
            min_capacity=bounds.min_count,
            max_capacity=bounds.max_count,
            opts=pulumi.ResourceOptions(parent=self),
        )
