"""Builds the API's gRPC server: TaskService, health and reflection behind mTLS, plus a
plaintext loopback-only health listener for the container health check."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import server_interceptor

from conveyor.api.auth import server_credentials
from conveyor.api.metrics_interceptor import MetricsInterceptor
from conveyor.api.servicer import TaskServicer
from conveyor.queue import TaskQueue
from conveyor.settings import ApiSettings
from conveyor.store import TaskStore
from conveyor.tasks.registry import TaskType
from conveyor.telemetry import metrics
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TaskService"].full_name


class ApiServer:
    def __init__(
        self,
        settings: ApiSettings,
        store: TaskStore,
        queue: TaskQueue,
        types: Mapping[str, TaskType],
    ) -> None:
        metrics.start_task_series(types)  # the API records cancels
        pool = futures.ThreadPoolExecutor(settings.api_max_workers, thread_name_prefix="rpc")
        self.server = grpc.server(
            pool,
            interceptors=[server_interceptor(), MetricsInterceptor()],
            maximum_concurrent_rpcs=settings.api_max_workers * 4,
        )
        pb_grpc.add_TaskServiceServicer_to_server(
            TaskServicer(settings, store, queue, types), self.server
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = self.server.add_secure_port(settings.api_listen, server_credentials(settings))
        if self.port == 0:
            raise OSError(f"cannot listen on {settings.api_listen}")
        self.health_server = grpc.server(futures.ThreadPoolExecutor(2))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
        self.health_port = self.health_server.add_insecure_port(settings.health_listen)

    def start(self) -> None:
        self.server.start()
        self.health_server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float) -> None:
        """Report NOT_SERVING first so load balancers drain, then finish in-flight RPCs."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.health_server.stop(0)
