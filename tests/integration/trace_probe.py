"""Run by test_tracing.py in a fresh process (the tracer provider is process-global): an
in-process API and worker with an in-memory span exporter; prints the finished spans as JSON.

Environment: the backend's AWS variables, CONVEYOR_TABLE_NAME/QUEUE_URL/DLQ_URL, the server's
CONVEYOR_TLS_*_FILE, and PROBE_CLIENT_{CA,CERT,KEY} for the client.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

from conveyor import wiring
from conveyor.api.auth import secure_channel
from conveyor.api.server import ApiServer
from conveyor.settings import ApiSettings, TlsSettings, WorkerSettings
from conveyor.tasks.registry import load
from conveyor.telemetry.tracing import configure_tracing
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc
from conveyor.worker.runner import Worker
from conveyor_dev.local import demo_handlers
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def main() -> None:
    exporter = InMemorySpanExporter()
    configure_tracing("conveyor-probe", None, SimpleSpanProcessor(exporter))
    api_settings = ApiSettings(
        api_listen="127.0.0.1:0", health_listen="127.0.0.1:0", metrics_listen="127.0.0.1:0"
    )
    worker_settings = WorkerSettings(
        metrics_listen="127.0.0.1:0",
        poll_wait_seconds=1,
        visibility_timeout_seconds=10,
        heartbeat_interval_seconds=2,
        lease_seconds=10,
    )
    deps = wiring.build(api_settings)
    types = load([demo_handlers.__name__])
    server = ApiServer(api_settings, deps.store, deps.queue, types)
    server.start()
    stop = threading.Event()
    worker = Worker(worker_settings, deps.store, deps.queue, types)
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    client_tls = TlsSettings(
        tls_ca_file=os.environ["PROBE_CLIENT_CA"],
        tls_cert_file=os.environ["PROBE_CLIENT_CERT"],
        tls_key_file=os.environ["PROBE_CLIENT_KEY"],
    )
    with secure_channel(f"127.0.0.1:{server.port}", client_tls) as channel:
        stub = pb_grpc.TaskServiceStub(channel)
        task = stub.SubmitTask(
            pb.SubmitTaskRequest(
                task_type="demo.sleep", payload=b'{"seconds": 0}', idempotency_key=uuid.uuid4().hex
            ),
            timeout=10,
        ).task
        deadline = time.monotonic() + 30
        while deps.store.get(task.task_id).state.value != "SUCCEEDED":
            if time.monotonic() > deadline:
                raise SystemExit("task did not succeed")
            time.sleep(0.1)
    stop.set()
    thread.join(15)
    server.stop(1)
    spans = [
        {
            "name": s.name,
            "kind": s.kind.name,
            "trace_id": format(s.context.trace_id, "032x"),
            "span_id": format(s.context.span_id, "016x"),
            "parent": format(s.parent.span_id, "016x") if s.parent else None,
            "attributes": {k: str(v) for k, v in (s.attributes or {}).items()},
        }
        for s in exporter.get_finished_spans()
    ]
    print(json.dumps({"task_id": task.task_id, "spans": spans}))


if __name__ == "__main__":
    main()
