"""ECS container definitions: each service container with its OpenTelemetry collector
sidecar, and the trace gateway's collector.

Settings reach the services as the `CONVEYOR_*` variables of `conveyor.settings`; TLS material
only through `secrets` (`valueFrom`), never `environment`. Collectors read their config from
`AOT_CONFIG_CONTENT` (the contrib image via `--config=env:`, the ADOT image natively) and can use
`${env:...}` for the variables in `collector_environment`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.runtime import ApiKnobs, Knobs, WorkerKnobs
from conveyor.settings import env_name, queue_environment

from conveyor_infra.config import ConfigError, StackConfig
from conveyor_infra.topology import OTLP_GRPC_PORT, TRACE_GATEWAY

COLLECTOR = "otel-collector"
COLLECTOR_CONFIG_VARIABLE = "AOT_CONFIG_CONTENT"
OTLP_ENDPOINT = "http://127.0.0.1:4317"
# The API's plaintext health endpoint stays on loopback, for `python -m conveyor.healthcheck`.
HEALTH_LISTEN = "127.0.0.1:50052"
# Non-root; the image needs no passwd entry for a numeric uid.
RUN_AS = "10001:10001"
SCRATCH_VOLUME = "tmp"
# The runtime knobs each service reads (conveyor.runtime), passed from the stack's values.
KNOBS: dict[str, type[Knobs]] = {"api": ApiKnobs, "worker": WorkerKnobs}
TLS_SECRET_VARIABLES = {
    "CONVEYOR_TLS_CA_PEM": "ca_pem",
    "CONVEYOR_TLS_CERT_PEM": "cert_pem",
    "CONVEYOR_TLS_KEY_PEM": "key_pem",
}


class CollectorConfigMissing(ConfigError):
    """A collector config file is not there; compute cannot be declared."""


def read_collector_config(repo_root: Path, relative_path: str, key: str) -> str:
    path = repo_root / relative_path
    if not path.is_file():
        raise CollectorConfigMissing(
            f"the OpenTelemetry collector config {relative_path} does not exist. The ECS tasks "
            "run collectors configured from it: write it (observability/collector) or point "
            f"conveyor:{key} at it. Stacks with conveyor:deployCompute=false do not need it."
        )
    return path.read_text()


@dataclass(frozen=True)
class DataPlaneRefs:
    """What every service needs to find the data plane; values may be Pulumi Inputs."""

    table_name: Any
    queue_urls: Mapping[str, tuple[Any, Any]]  # lane -> (queue URL, DLQ URL)


def service_environment(service: str, config: StackConfig, refs: DataPlaneRefs) -> dict[str, Any]:
    """The non-secret settings of one service, named as conveyor.settings reads them."""
    environment: dict[str, Any] = {
        "AWS_REGION": config.region,
        "CONVEYOR_SERVICE_NAME": f"conveyor-{service}",
        "CONVEYOR_TABLE_NAME": refs.table_name,
        **queue_environment(refs.queue_urls),
        "CONVEYOR_METRICS_LISTEN": f"127.0.0.1:{config.metrics_port}",
        "CONVEYOR_OTLP_ENDPOINT": OTLP_ENDPOINT,
        "CONVEYOR_LOG_LEVEL": config.log_level,
    }
    if service == "api":
        environment |= {
            "CONVEYOR_API_LISTEN": f"0.0.0.0:{config.api_port}",
            "CONVEYOR_HEALTH_LISTEN": HEALTH_LISTEN,
        }
    if service == "worker":
        environment["CONVEYOR_WORKER_CONCURRENCY"] = str(config.worker.concurrency)
        environment |= config.worker.env  # the handlers' own (config.py keeps them apart)
    if service in ("api", "worker") and config.task_modules:
        environment[env_name("task_modules")] = ",".join(config.task_modules)
    for field in KNOBS.get(service, Knobs).model_fields:
        environment[env_name(field)] = str(getattr(config, field))
    return environment


def collector_environment(
    service: str,
    config: StackConfig,
    collector_config: str,
    remote_write_url: Any,
    trace_gateway_endpoint: str,
) -> dict[str, Any]:
    return {
        COLLECTOR_CONFIG_VARIABLE: collector_config,
        "AWS_REGION": config.region,
        "AMP_REMOTE_WRITE_ENDPOINT": remote_write_url,
        "OTEL_GATEWAY_ENDPOINT": trace_gateway_endpoint,
        "CONVEYOR_SERVICE_NAME": f"conveyor-{service}",
        "CONVEYOR_METRICS_TARGET": f"127.0.0.1:{config.metrics_port}",
    }


def _pairs(values: Mapping[str, Any], value_key: str) -> list[dict[str, Any]]:
    return [{"name": name, value_key: values[name]} for name in sorted(values)]


def _logging(log_group_name: Any, region: str, stream_prefix: str) -> dict[str, Any]:
    return {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": log_group_name,
            "awslogs-region": region,
            "awslogs-stream-prefix": stream_prefix,
            # A slow CloudWatch must not block the service's stdout.
            "mode": "non-blocking",
            "max-buffer-size": "4m",
        },
    }


@dataclass(frozen=True)
class TaskContainers:
    service: str
    config: StackConfig
    refs: DataPlaneRefs
    collector_config: str
    log_group_name: Any
    remote_write_url: Any
    trace_gateway_endpoint: str
    secrets: Mapping[str, Any]  # variable -> valueFrom

    def definitions(self) -> list[dict[str, Any]]:
        return [self.service_container(), self.collector_container()]

    def service_container(self) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": self.service,
            "image": self.config.image,
            "essential": True,
            "command": ["python", "-m", f"conveyor.{self.service}"],
            "user": RUN_AS,
            "readonlyRootFilesystem": True,
            "environment": _pairs(
                service_environment(self.service, self.config, self.refs), "value"
            ),
            "secrets": _pairs(self.secrets, "valueFrom"),
            "mountPoints": [{"sourceVolume": SCRATCH_VOLUME, "containerPath": "/tmp"}],
            "linuxParameters": {"initProcessEnabled": True},
            # The worker checks at start that its grace and hand-backs fit into it.
            "stopTimeout": self.config.stop_timeout_seconds,
            "dependsOn": [{"containerName": COLLECTOR, "condition": "START"}],
            "logConfiguration": _logging(self.log_group_name, self.config.region, self.service),
        }
        if self.service == "api":
            container["portMappings"] = [
                {"name": "grpc", "containerPort": self.config.api_port, "protocol": "tcp"}
            ]
            container["healthCheck"] = {
                "command": ["CMD", "python", "-m", "conveyor.healthcheck"],
                "interval": 15,
                "timeout": 5,
                "retries": 3,
                "startPeriod": 30,
            }
        return container

    def collector_container(self) -> dict[str, Any]:
        # Not essential: losing telemetry must not stop task processing (a scrape-target-down
        # alert reports it instead).
        return {
            "name": COLLECTOR,
            "image": self.config.collector_image,
            "essential": False,
            # Its cgroup limit: memory_limiter's percentages apply to this, not to the task.
            "memory": self.config.collector_memory,
            "command": [f"--config=env:{COLLECTOR_CONFIG_VARIABLE}"],
            "user": RUN_AS,
            "readonlyRootFilesystem": True,
            "environment": _pairs(
                collector_environment(
                    self.service,
                    self.config,
                    self.collector_config,
                    self.remote_write_url,
                    self.trace_gateway_endpoint,
                ),
                "value",
            ),
            "logConfiguration": _logging(
                self.log_group_name, self.config.region, f"{self.service}-{COLLECTOR}"
            ),
        }


def trace_gateway_container(
    config: StackConfig, gateway_config: str, log_group_name: Any
) -> dict[str, Any]:
    """The gateway collector: OTLP in from every sidecar, tail sampling, X-Ray out."""
    return {
        "name": TRACE_GATEWAY,
        "image": config.collector_image,
        "essential": True,
        "command": [f"--config=env:{COLLECTOR_CONFIG_VARIABLE}"],
        "user": RUN_AS,
        "readonlyRootFilesystem": True,
        "environment": _pairs(
            {COLLECTOR_CONFIG_VARIABLE: gateway_config, "AWS_REGION": config.region}, "value"
        ),
        "portMappings": [{"name": "otlp", "containerPort": OTLP_GRPC_PORT, "protocol": "tcp"}],
        "logConfiguration": _logging(log_group_name, config.region, TRACE_GATEWAY),
    }
