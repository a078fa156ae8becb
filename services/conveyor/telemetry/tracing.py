"""OpenTelemetry tracing: one trace from the gRPC call through DynamoDB and SQS to the worker.

Spans export over OTLP when CONVEYOR_OTLP_ENDPOINT is set (the collector sidecar in ECS, see
observability/collector/); otherwise they are created (trace ids still reach the logs) but not
exported. The botocore instrumentation adds a span per AWS call; the gRPC server interceptor
comes from `server_interceptor()` so it runs inside Conveyor's own interceptor chain.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def configure_tracing(
    service: str, otlp_endpoint: str | None, extra_processor: SpanProcessor | None = None
) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    if extra_processor is not None:
        provider.add_span_processor(extra_processor)
    trace.set_tracer_provider(provider)
    BotocoreInstrumentor().instrument(tracer_provider=provider)
    return provider
