"""Every Prometheus metric Conveyor exports, in one place (DESIGN.md §4).

gRPC metrics keep go-grpc-prometheus names so that existing dashboards work. Conveyor's own
metrics start with `conveyor_`, use base units and `_total` for counters. Histogram buckets put
each SLO threshold of observability/slos.yaml exactly on a boundary (test_slo_spec.py checks it).
Rules, dashboards and runbooks may only use names defined here; a test scrapes a live
`/metrics` to hold them to it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from conveyor.domain import TERMINAL

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUEUE_DELAY_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
# How late the relay acts on a due time (a delayed task's send, a schedule slot's firing); 2 s,
# the delayed tasks' documented bound, is a boundary.
DUE_LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
PROCESSING_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

# ---- gRPC server (go-grpc-prometheus names) ----
GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
grpc_server_started_total = Counter(
    "grpc_server_started_total", "RPCs started on the server.", GRPC_LABELS
)
grpc_server_handled_total = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, regardless of success or failure.",
    (*GRPC_LABELS, "grpc_code"),
)
grpc_server_handling_seconds = Histogram(
    "grpc_server_handling_seconds",
    "Response latency of RPCs handled by the server.",
    GRPC_LABELS,
    buckets=LATENCY_BUCKETS,
)

# What the API itself adds to a SubmitTask: its handling time less the AWS calls it made
# (issue 9's target is 3 ms at p99, hence the boundary).
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1)
api_overhead_seconds = Histogram(
    "conveyor_api_overhead_seconds",
    "Handling time of an RPC not spent in AWS calls.",
    ("grpc_method",),
    buckets=OVERHEAD_BUCKETS,
)
# The CPU part of it: the handler thread's CPU time outside its AWS calls. The rest of the
# overhead is the thread waiting for the GIL or a core, which a busy host makes long.
api_overhead_cpu_seconds = Histogram(
    "conveyor_api_overhead_cpu_seconds",
    "CPU time an RPC's handler thread used outside AWS calls.",
    ("grpc_method",),
    buckets=OVERHEAD_BUCKETS,
)

# quota: submit_rate | streams (conveyor.api.quotas), queued | freshness (conveyor.api.admission).
# Tenants are provisioned identities (one client certificate each), so the label stays bounded.
quota_refusals_total = Counter(
    "conveyor_quota_refusals_total",
    "Requests refused because the tenant was over a quota (RESOURCE_EXHAUSTED, retry-after).",
    ("tenant", "quota"),
)

# ---- tasks ----
tasks_submitted_total = Counter(
    "conveyor_tasks_submitted_total",
    "Tasks committed by the API (replays excluded).",
    ("task_type",),
)
# outcome: a terminal state, lower case
tasks_completed_total = Counter(
    "conveyor_tasks_completed_total",
    "Tasks that reached a terminal state.",
    ("task_type", "outcome"),
)
TASK_OUTCOMES = tuple(sorted(state.value.lower() for state in TERMINAL))


def start_task_series(task_types: Iterable[str]) -> None:
    """Export each declared type's completions at 0 for every outcome. A labelled series is
    otherwise born at its first increment, at 1, and rate() sees no increase in it: the first
    task of a type to end DEAD in a process would count toward no SLO or alert until a second
    one did."""
    for task_type in task_types:
        for outcome in TASK_OUTCOMES:
            tasks_completed_total.labels(task_type, outcome)


# outcome: succeeded | retry | failed | dead | lost_lease | cancelled
task_attempts_total = Counter(
    "conveyor_task_attempts_total", "Handler attempts by outcome.", ("task_type", "outcome")
)
task_processing_seconds = Histogram(
    "conveyor_task_processing_seconds",
    "Time a handler attempt ran.",
    ("task_type",),
    buckets=PROCESSING_BUCKETS,
)
task_queue_delay_seconds = Histogram(
    "conveyor_task_queue_delay_seconds",
    "Time from submit (a delayed task: from its not_before) to the start of the first attempt.",
    ("task_type",),
    buckets=QUEUE_DELAY_BUCKETS,
)

# ---- metrics one kind of process owns ----
# Created unregistered: the owning process registers them (`export`) when it builds its relay or
# worker. Registered in every process, an unlabelled gauge reads 0 from each process that never
# sets it, so after a relay died max(conveyor_outbox_oldest_age_seconds) read the API's and the
# workers' zeros, a false all-clear (issue 17). An owned metric vanishes with its owner instead,
# which the absence alerts see.
_exported: set[int] = set()
_export_lock = threading.Lock()


def export(*owned: MetricWrapperBase) -> None:
    """Register `owned` with this process's /metrics (again is a no-op)."""
    with _export_lock:
        for metric in owned:
            if id(metric) not in _exported:
                REGISTRY.register(metric)
                _exported.add(id(metric))


# ---- worker ----
worker_inflight_tasks = Gauge(
    "conveyor_worker_inflight_tasks", "Tasks a worker is running now.", registry=None
)
worker_concurrency_limit = Gauge(
    "conveyor_worker_concurrency_limit",
    "Most tasks a worker runs at once (saturation divisor).",
    registry=None,
)
WORKER_METRICS = (worker_inflight_tasks, worker_concurrency_limit)
sqs_messages_received_total = Counter(
    "conveyor_sqs_messages_received_total", "Messages received from SQS.", ("queue", "lane")
)

# ---- outbox relay ----
outbox_pending_tasks = Gauge(
    "conveyor_outbox_pending_tasks",
    "Tasks committed whose message is not yet known to be sent.",
    registry=None,
)
outbox_oldest_age_seconds = Gauge(
    "conveyor_outbox_oldest_age_seconds", "Age of the oldest outbox mark.", registry=None
)
outbox_relayed_total = Counter(
    "conveyor_outbox_relayed_total",
    "Messages the relay (re-)sent for stale outbox marks.",
    registry=None,
)
delayed_task_lag_seconds = Histogram(
    "conveyor_delayed_task_lag_seconds",
    "Time from a delayed task's not_before to the relay's send of its message.",
    buckets=DUE_LAG_BUCKETS,
    registry=None,
)
# Recurring schedules (conveyor.scheduler), one count per slot the relay fires.
# outcome: created (the slot's task made now) | replayed (the slot's task existed: another
# relay fired it, or this one again after a kill) | failed (the submit raised; the next sweep
# tries again)
schedule_firings_total = Counter(
    "conveyor_schedule_firings_total",
    "Schedule slots the relay fired, by outcome.",
    ("outcome",),
    registry=None,
)
# Born at 0 (rate() sees the first firing of each outcome), so the series exist from the start.
SCHEDULE_OUTCOMES = ("created", "replayed", "failed")
for _outcome in SCHEDULE_OUTCOMES:
    schedule_firings_total.labels(_outcome)
schedule_catch_ups_total = Counter(
    "conveyor_schedule_catch_ups_total",
    "Firings that skipped older missed slots (catch-up: the latest missed slot fires once).",
    registry=None,
)
schedule_fire_lag_seconds = Histogram(
    "conveyor_schedule_fire_lag_seconds",
    "Time from a schedule's slot to the creation of its task.",
    buckets=DUE_LAG_BUCKETS,
    registry=None,
)
# queue: main | dlq ; lane: conveyor.domain.LANES ; state: visible | inflight | delayed
queue_messages = Gauge(
    "conveyor_queue_messages",
    "Approximate messages in a queue, by state.",
    ("queue", "lane", "state"),
    registry=None,
)
# queue: main | dlq ; lane: conveyor.domain.LANES (conveyor.queue_age: how it is measured)
queue_oldest_age_seconds = Gauge(
    "conveyor_queue_oldest_age_seconds",
    "How long the oldest visible message of a queue has waited, as the relay measures it.",
    ("queue", "lane"),
    registry=None,
)
dlq_compensated_total = Counter(
    "conveyor_dlq_compensated_total",
    "Tasks found in the DLQ while not terminal and marked DEAD by the compensator.",
    registry=None,
)
RELAY_METRICS = (
    outbox_pending_tasks,
    outbox_oldest_age_seconds,
    outbox_relayed_total,
    delayed_task_lag_seconds,
    queue_messages,
    queue_oldest_age_seconds,
    dlq_compensated_total,
    schedule_firings_total,
    schedule_catch_ups_total,
    schedule_fire_lag_seconds,
)

# ---- AWS and resilience ----
# outcome: success | error | throttled
aws_requests_total = Counter(
    "conveyor_aws_requests_total", "AWS API calls.", ("service", "operation", "outcome")
)
aws_request_seconds = Histogram(
    "conveyor_aws_request_seconds",
    "AWS API call latency, from building the request to its parsed response, retries included.",
    ("service", "operation"),
    buckets=LATENCY_BUCKETS,
)
# 0 = closed, 1 = half-open, 2 = open
CIRCUIT_STATE_VALUES = {"closed": 0, "half-open": 1, "open": 2}
circuit_breaker_state = Gauge(
    "conveyor_circuit_breaker_state",
    "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
    ("dependency",),
)
