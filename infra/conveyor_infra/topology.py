"""The processes a compute stack runs, one ECS service each, and the port their traces use."""

# Conveyor's own processes: `python -m conveyor.<service>`.
SERVICES = ("api", "relay", "worker")
# The OpenTelemetry trace gateway (observability/collector/gateway.yaml): every sidecar sends
# its spans there for tail sampling, so it runs as one replica found through Cloud Map.
TRACE_GATEWAY = "otel-gateway"
OTLP_GRPC_PORT = 4317
