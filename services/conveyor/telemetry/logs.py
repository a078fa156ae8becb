"""One JSON object per log line, with the current trace_id and span_id on every event, and its
`time` in RFC 3339 UTC with milliseconds (2026-12-05T07:58:05.956Z)."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter


class TraceContextFilter(logging.Filter):
    """Stamps each record with the active span's ids ("" outside any span) and the service."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        record.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else ""
        record.span_id = format(ctx.span_id, "016x") if ctx.is_valid else ""
        record.service = self._service
        return True


class _JsonFormatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The record's creation time in RFC 3339, UTC, to the millisecond (truncated, as
        logging's own `msecs`), whatever the host's zone."""
        created = datetime.fromtimestamp(record.created, UTC)
        return created.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TraceContextFilter(service))
    handler.setFormatter(
        _JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(trace_id)s %(span_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # botocore at DEBUG would log request bodies (payloads); keep it quiet.
    logging.getLogger("botocore").setLevel(logging.WARNING)
