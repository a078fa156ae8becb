"""Process start-up shared by api, relay and worker: logs, traces, /metrics, signals."""

from __future__ import annotations

import signal
import threading

from prometheus_client import start_http_server

from conveyor.settings import TelemetrySettings
from conveyor.telemetry.logs import configure_logging
from conveyor.telemetry.tracing import configure_tracing


def start_telemetry(settings: TelemetrySettings, service: str) -> None:
    configure_logging(service, settings.log_level)
    configure_tracing(service, settings.otlp_endpoint)
    host, _, port = settings.metrics_listen.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0")


def stop_event_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: the cancellation token every loop watches."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop
