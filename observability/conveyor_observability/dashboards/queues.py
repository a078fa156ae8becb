"""Queue and workers: queue depths and delay, worker activity, the outbox relay, the DLQ, AWS
calls and the circuit breaker."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from conveyor_observability.dashboards.panels import (
    RATE,
    Query,
    graph,
    new_dashboard,
    row,
    single_stat,
    states,
)
from conveyor_observability.spec import Spec


def _quantile(metric: str, quantile: str, by: str = "le") -> str:
    return f"histogram_quantile({quantile}, sum by ({by}) (rate({metric}_bucket[{RATE}])))"


def queues_dashboard(spec: Spec) -> db.Dashboard:
    delay = "conveyor_task_queue_delay_seconds"
    processing = "conveyor_task_processing_seconds"
    return (
        new_dashboard(
            f"{spec.service}-queues",
            "Conveyor / Queue and workers",
            "SQS queue and DLQ depths, queue delay, workers, the outbox relay, AWS calls and "
            "the DynamoDB circuit breaker.",
        )
        .with_row(row("Queues"))
        .with_panel(
            graph(
                "Messages by lane, queue and state",
                "Approximate SQS depths of every priority lane's queue and DLQ, reported by the "
                "relay (largest report per series).",
                "short",
                [
                    Query(
                        "max by (lane, queue, state) (conveyor_queue_messages)",
                        "{{lane}} {{queue}} {{state}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Oldest queued message by lane",
                "How long each lane's oldest visible message has waited, as the relay infers "
                "it (ConveyorTasksNotConsumed pages per lane above 60 s).",
                "s",
                [
                    Query(
                        'max by (lane) (conveyor_queue_oldest_age_seconds{queue="main"})',
                        "{{lane}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Messages received",
                "Messages workers receive from each lane's queue per second.",
                "ops",
                [
                    Query(
                        "sum by (lane, queue) "
                        f"(rate(conveyor_sqs_messages_received_total[{RATE}]))",
                        "{{lane}} {{queue}}",
                    )
                ],
            )
        )
        .with_panel(
            single_stat(
                "DLQ messages",
                "Messages in every lane's dead-letter queue, all states; anything above 0 is a "
                "DEAD task to inspect (ConveyorDlqNotEmpty, per lane).",
                "short",
                Query(
                    "sum(max by (lane) "
                    '(sum by (job, instance, lane) (conveyor_queue_messages{queue="dlq"})))'
                ),
                [(None, "green"), (1, "red")],
            )
        )
        .with_panel(
            single_stat(
                "DLQ compensations (1h)",
                "Tasks found in the DLQ while not terminal and marked DEAD by the compensator.",
                "short",
                Query("sum(increase(conveyor_dlq_compensated_total[1h]))"),
                [(None, "green"), (1, "orange")],
            )
        )
        .with_row(row("Queue delay (submit to first start)"))
        .with_panel(
            graph(
                "Queue delay",
                "p50 and p99 from submit to the first attempt's start; dashed: the 30 s "
                "freshness SLO.",
                "s",
                [
                    Query(_quantile(delay, "0.5"), "p50"),
                    Query(_quantile(delay, "0.99"), "p99"),
                ],
                lines=[30],
            )
        )
        .with_panel(
            graph(
                "Queue delay p99 by task type",
                "Which task types wait.",
                "s",
                [Query(_quantile(delay, "0.99", "le, task_type"), "{{task_type}}")],
                lines=[30],
            )
        )
        .with_row(row("Workers"))
        .with_panel(
            graph(
                "In-flight tasks and limit",
                "Tasks running on all workers against their combined concurrency limit.",
                "short",
                [
                    Query("sum(conveyor_worker_inflight_tasks)", "in flight"),
                    Query("sum(conveyor_worker_concurrency_limit)", "limit"),
                ],
            )
        )
        .with_panel(
            graph(
                "Attempts by outcome",
                "Handler attempts per second: succeeded, retry, failed, dead, lost_lease, "
                "cancelled.",
                "ops",
                [
                    Query(
                        f"sum by (outcome) (rate(conveyor_task_attempts_total[{RATE}]))",
                        "{{outcome}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Handler run time",
                "p50 and p99 of one handler attempt.",
                "s",
                [
                    Query(_quantile(processing, "0.5"), "p50"),
                    Query(_quantile(processing, "0.99"), "p99"),
                ],
            )
        )
        .with_panel(
            graph(
                "Permanently failed tasks by type",
                "Tasks a handler declared FAILED (bad input). Not an SLO error; a jump here "
                "can still be a handler bug.",
                "ops",
                [
                    Query(
                        "sum by (task_type) (rate(conveyor_tasks_completed_total"
                        f'{{outcome="failed"}}[{RATE}]))',
                        "{{task_type}}",
                    )
                ],
            )
        )
        .with_row(row("Outbox relay"))
        .with_panel(
            graph(
                "Outbox marks",
                "Tasks committed whose SQS message is not yet known to be sent.",
                "short",
                [Query("max(conveyor_outbox_pending_tasks)", "pending")],
                width=8,
            )
        )
        .with_panel(
            graph(
                "Oldest outbox mark",
                "Age of the oldest mark; dashed: ConveyorOutboxStuck's 5-minute limit.",
                "s",
                [Query("max(conveyor_outbox_oldest_age_seconds)", "oldest")],
                width=8,
                lines=[300],
            )
        )
        .with_panel(
            graph(
                "Messages re-sent by the relay",
                "Stale marks the relay sent again: the API's own send failed or was slow.",
                "ops",
                [Query(f"sum(rate(conveyor_outbox_relayed_total[{RATE}]))", "re-sent")],
                width=8,
            )
        )
        .with_row(row("Delayed tasks and schedules"))
        .with_panel(
            graph(
                "Schedule firings by outcome",
                "Slots the relay fired per second: created (the slot's task made), replayed (it "
                "existed: another relay, or a restart), failed (tried again next sweep); "
                "catch-up: a task made for the latest of several missed slots.",
                "ops",
                [
                    Query(
                        f"sum by (outcome) (rate(conveyor_schedule_firings_total[{RATE}]))",
                        "{{outcome}}",
                    ),
                    Query(f"sum(rate(conveyor_schedule_catch_ups_total[{RATE}]))", "catch-up"),
                ],
                width=8,
            )
        )
        .with_panel(
            graph(
                "Schedule lag",
                "Slot time to its task's creation, p50 and p99 (the relay sleeps until the "
                "next slot, so this is its sweep's own time unless it was down or behind).",
                "s",
                [
                    Query(_quantile("conveyor_schedule_fire_lag_seconds", "0.5"), "p50"),
                    Query(_quantile("conveyor_schedule_fire_lag_seconds", "0.99"), "p99"),
                ],
                width=8,
            )
        )
        .with_panel(
            graph(
                "Delayed task lag",
                "A delayed task's not_before to the relay's send of its message, p50 and p99.",
                "s",
                [
                    Query(_quantile("conveyor_delayed_task_lag_seconds", "0.5"), "p50"),
                    Query(_quantile("conveyor_delayed_task_lag_seconds", "0.99"), "p99"),
                ],
                width=8,
            )
        )
        .with_row(row("AWS and resilience"))
        .with_panel(
            graph(
                "AWS calls by outcome",
                "Calls per second by service and outcome (success, error, throttled).",
                "ops",
                [
                    Query(
                        f"sum by (service, outcome) (rate(conveyor_aws_requests_total[{RATE}]))",
                        "{{service}} {{outcome}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "AWS call latency p99",
                "p99 per operation, retries included.",
                "s",
                [
                    Query(
                        _quantile("conveyor_aws_request_seconds", "0.99", "le, service, operation"),
                        "{{service}} {{operation}}",
                    )
                ],
            )
        )
        .with_panel(
            states(
                "Circuit breaker",
                "Breaker state per component and dependency; open means calls fail fast.",
                Query(
                    "max by (job, dependency) (conveyor_circuit_breaker_state)",
                    "{{job}} {{dependency}}",
                ),
                {0: ("closed", "green"), 1: ("half-open", "orange"), 2: ("open", "red")},
                width=24,
            )
        )
    )
