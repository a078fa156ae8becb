"""Service overview: the four golden signals of the task API and the workers."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from conveyor_observability.dashboards.panels import (
    RATE,
    Query,
    graph,
    new_dashboard,
    row,
    single_stat,
)
from conveyor_observability.spec import Spec, readable_seconds

API = 'grpc_service="conveyor.v1.TaskService"'
UNARY = f'{API},grpc_type="unary"'


def _latency_quantile(quantile: str, by: str = "le") -> str:
    return (
        f"histogram_quantile({quantile}, sum by ({by}) "
        f"(rate(grpc_server_handling_seconds_bucket{{{UNARY}}}[{RATE}])))"
    )


def overview_dashboard(spec: Spec) -> db.Dashboard:
    latency_slo = spec.slo("api-latency").threshold_seconds
    assert latency_slo is not None, "the api-latency SLO sets threshold_seconds"
    return (
        new_dashboard(
            f"{spec.service}-overview",
            "Conveyor / Service overview",
            "Golden signals: traffic, errors, latency and saturation of the task API and workers.",
        )
        .with_row(row("Traffic"))
        .with_panel(
            graph(
                "RPCs by method",
                "Completed TaskService RPCs per second.",
                "reqps",
                [
                    Query(
                        f"sum by (grpc_method) (rate(grpc_server_handled_total{{{API}}}[{RATE}]))",
                        "{{grpc_method}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Tasks submitted and finished",
                "Tasks committed by the API, and tasks reaching a terminal state by outcome. "
                "A rise in 'failed' with steady input can be a handler rejecting good input.",
                "ops",
                [
                    Query(f"sum(rate(conveyor_tasks_submitted_total[{RATE}]))", "submitted"),
                    Query(
                        f"sum by (outcome) (rate(conveyor_tasks_completed_total[{RATE}]))",
                        "{{outcome}}",
                    ),
                ],
            )
        )
        .with_row(row("Errors"))
        .with_panel(
            graph(
                "Error ratio by SLO (5m)",
                "The SLIs' error ratios: server faults, slow RPCs, DEAD tasks, late starts.",
                "percentunit",
                [
                    Query(
                        f'slo:sli_error:ratio_rate5m{{sloth_service="{spec.service}"}}',
                        "{{sloth_slo}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Non-OK responses by code",
                "Client errors (InvalidArgument, NotFound, ...) appear here but do not burn "
                "the availability budget.",
                "reqps",
                [
                    Query(
                        f"sum by (grpc_code) (rate(grpc_server_handled_total"
                        f'{{{API},grpc_code!="OK"}}[{RATE}]))',
                        "{{grpc_code}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Quota refusals by tenant",
                "Requests refused with RESOURCE_EXHAUSTED because the tenant was over its quota "
                "(submit_rate, streams): the caller's doing, not counted against availability. "
                "ConveyorQuotaRefusals tickets a tenant refused over once a second.",
                "reqps",
                [
                    Query(
                        f"sum by (tenant, quota) (rate(conveyor_quota_refusals_total[{RATE}]))",
                        "{{tenant}} {{quota}}",
                    )
                ],
            )
        )
        .with_row(row("Latency"))
        .with_panel(
            graph(
                "Unary RPC latency",
                "p50 and p99 of unary RPCs; the dashed line is the "
                f"{readable_seconds(latency_slo)} latency SLO.",
                "s",
                [
                    Query(_latency_quantile("0.5"), "p50"),
                    Query(_latency_quantile("0.99"), "p99"),
                ],
                lines=[float(latency_slo)],
            )
        )
        .with_panel(
            graph(
                "Unary RPC p99 by method",
                "Which RPC is slow.",
                "s",
                [Query(_latency_quantile("0.99", "le, grpc_method"), "{{grpc_method}}")],
                lines=[float(latency_slo)],
            )
        )
        .with_row(row("Saturation"))
        .with_panel(
            single_stat(
                "Worker saturation",
                "Tasks running / most tasks the workers run at once, over all workers.",
                "percentunit",
                Query(
                    "sum(conveyor_worker_inflight_tasks) / sum(conveyor_worker_concurrency_limit)"
                ),
                [(None, "green"), (0.8, "orange"), (0.95, "red")],
            )
        )
        .with_panel(
            single_stat(
                "Tasks waiting",
                "Visible messages on every lane's queue.",
                "short",
                Query('sum(max by (lane) (conveyor_queue_messages{queue="main",state="visible"}))'),
                [(None, "green"), (1000, "orange")],
            )
        )
        .with_panel(
            single_stat(
                "Oldest outbox mark",
                "Age of the oldest committed task not yet known to be on the queue.",
                "s",
                Query("max(conveyor_outbox_oldest_age_seconds)"),
                [(None, "green"), (60, "orange"), (300, "red")],
            )
        )
        .with_panel(
            single_stat(
                "Instances up",
                "Scrape targets answering, per component.",
                "short",
                Query('sum by (job) (up{job=~"conveyor-.*"})', "{{job}}"),
                [(None, "red"), (1, "green")],
            )
        )
        .with_panel(
            graph(
                "Worker saturation over time",
                "Tasks running / concurrency limit; near 100% queue delay grows.",
                "percentunit",
                [
                    Query(
                        "sum(conveyor_worker_inflight_tasks) "
                        "/ sum(conveyor_worker_concurrency_limit)",
                        "saturation",
                    )
                ],
                width=24,
                lines=[1],
            )
        )
    )
