"""Start-up shared by the api, relay and worker processes.

Configuration first (exit 2 with every bad variable named), then signals, logs, traces and
/metrics, then the AWS clients, then the service's own loop until SIGTERM or SIGINT.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import start_http_server

from conveyor import wiring
from conveyor.settings import ConfigError, TelemetrySettings, load
from conveyor.telemetry.logs import configure_logging
from conveyor.telemetry.tracing import configure_tracing

S = TypeVar("S", bound=TelemetrySettings)
Run = Callable[[threading.Event], None]


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


def serve(model: type[S], default_name: str, build: Callable[[S, wiring.Deps], Run]) -> int:
    """A service's main(): `build` turns settings and AWS dependencies into its loop."""
    try:
        settings = load(model)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    stop = stop_event_on_signals()
    start_telemetry(settings, settings.service_name or default_name)
    try:
        run = build(settings, wiring.build(settings))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    run(stop)
    return 0
