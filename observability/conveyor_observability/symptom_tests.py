"""promtool scenarios for the symptom alerts: each fires when it should and stays silent in the
look-alike cases that must not wake anyone.

Series use promtool's notation, one sample a minute: "1x5" is six samples of 1 (minutes 0-5),
"0+60x20" counts 0, 60, ... 1200, "_" is a missing sample.
"""

from __future__ import annotations

from conveyor_observability.promtool_tests import AlertCheck, Scenario

# The collector sidecar makes each ECS task ARN the `instance` (observability/collector).
TASK_ARN = "arn:aws:ecs:eu-west-1:111122223333:task/conveyor"
RELAY_A = f'job="conveyor-relay",instance="{TASK_ARN}/relay-a"'
RELAY_B = f'job="conveyor-relay",instance="{TASK_ARN}/relay-b"'
API_A = f'job="conveyor-api",instance="{TASK_ARN}/api-a"'
API_B = f'job="conveyor-api",instance="{TASK_ARN}/api-b"'
WORKER_A = f'job="conveyor-worker",instance="{TASK_ARN}/worker-a"'

DLQ = "ConveyorDlqNotEmpty"
OUTBOX = "ConveyorOutboxStuck"
NOT_CONSUMED = "ConveyorTasksNotConsumed"
BREAKER = "ConveyorCircuitBreakerOpen"
TARGET_DOWN = "ConveyorTargetDown"
COMPONENT_DOWN = "ConveyorComponentDown"
QUOTA = "ConveyorQuotaRefusals"

NO_LABELS: dict[str, str] = {}


DEFAULT_LANE = {"lane": "default"}
HIGH_LANE = {"lane": "high"}


def _queue(instance: str, queue: str, state: str, lane: str = "default") -> str:
    return f'conveyor_queue_messages{{{instance},queue="{queue}",lane="{lane}",state="{state}"}}'


def _age(instance: str, lane: str = "default") -> str:
    return f'conveyor_queue_oldest_age_seconds{{{instance},queue="main",lane="{lane}"}}'


def _up(instance: str) -> str:
    return f"up{{{instance}}}"


def _dlq_scenarios() -> list[Scenario]:
    return [
        Scenario(
            name="DLQ messages for 5 minutes raise one ticket, however many relays report them; "
            "redriving them resolves it",
            series={
                _queue(RELAY_A, "dlq", "visible"): "0x10 3x19 0x10",
                _queue(RELAY_B, "dlq", "visible"): "0x10 3x19 0x10",
                _queue(RELAY_A, "dlq", "inflight"): "0x40",
            },
            checks=[
                AlertCheck(9, DLQ),
                AlertCheck(14, DLQ),
                AlertCheck(20, DLQ, [DEFAULT_LANE]),
                AlertCheck(35, DLQ),
            ],
        ),
        Scenario(
            name="each lane's DLQ raises its own ticket: the high lane's alone, then both",
            series={
                _queue(RELAY_A, "dlq", "visible", "high"): "0x5 2x30",
                _queue(RELAY_A, "dlq", "visible"): "0x15 1x20",
                _queue(RELAY_A, "main", "visible", "high"): "5x35",
            },
            checks=[
                AlertCheck(12, DLQ, [HIGH_LANE]),
                AlertCheck(25, DLQ, [HIGH_LANE, DEFAULT_LANE]),
            ],
        ),
        Scenario(
            name="DLQ messages count in every state, not only visible",
            series={
                _queue(RELAY_A, "dlq", "visible"): "0x20",
                _queue(RELAY_A, "dlq", "inflight"): "2x20",
            },
            checks=[AlertCheck(10, DLQ, [DEFAULT_LANE])],
        ),
        Scenario(
            name="a DLQ message handled within 5 minutes is silent",
            series={_queue(RELAY_A, "dlq", "visible"): "0x5 1x2 0x20"},
            checks=[AlertCheck(8, DLQ), AlertCheck(15, DLQ)],
        ),
    ]


def _outbox_scenarios() -> list[Scenario]:
    age = f"conveyor_outbox_oldest_age_seconds{{{RELAY_A}}}"
    return [
        Scenario(
            name="an outbox mark older than 5 minutes for 2 minutes pages; the relay catching "
            "up resolves it",
            # The age passes 300 s at minute 6; the relay clears the mark at minute 21.
            series={age: "0+60x20 0x10"},
            checks=[
                AlertCheck(5, OUTBOX),
                AlertCheck(7, OUTBOX),
                AlertCheck(9, OUTBOX, [NO_LABELS]),
                AlertCheck(25, OUTBOX),
            ],
        ),
        Scenario(
            name="a relay keeping marks a few seconds old is silent",
            series={age: "5 12 3 15 8 11 2 14 9 13 4 10 7 12 6 15 3 11 8 14 5"},
            checks=[AlertCheck(20, OUTBOX)],
        ),
    ]


def _not_consumed_scenarios() -> list[Scenario]:
    age = _age(RELAY_A)
    return [
        Scenario(
            name="the oldest queued task waiting over a minute for 2 minutes pages while the "
            "workers are stalled; consuming again resolves it",
            # Workers stall at minute 10: the head's age grows 60 s a minute, passes 60 s at
            # minute 12 and pages at 14; they come back at minute 20.
            series={age: "0x10 0+60x10 0x10"},
            checks=[
                AlertCheck(12, NOT_CONSUMED),
                AlertCheck(15, NOT_CONSUMED, [DEFAULT_LANE]),
                AlertCheck(19, NOT_CONSUMED, [DEFAULT_LANE]),
                AlertCheck(22, NOT_CONSUMED),
            ],
        ),
        Scenario(
            name="the high lane's queue not consumed while the default lane's is pages for the "
            "high lane alone",
            series={_age(RELAY_A, "high"): "0x10 0+60x10 0x10", age: "0 2 0 3 1 0x26"},
            checks=[
                AlertCheck(12, NOT_CONSUMED),
                AlertCheck(15, NOT_CONSUMED, [HIGH_LANE]),
                AlertCheck(22, NOT_CONSUMED),
            ],
        ),
        Scenario(
            name="a backlog that keeps shrinking (a head a few seconds old) is silent",
            series={age: "3 0 5 2 8 0 1 4 0 6 2 0 3 9 1 0 2 5 0 1 0"},
            checks=[AlertCheck(10, NOT_CONSUMED), AlertCheck(20, NOT_CONSUMED)],
        ),
    ]


def _component_absent_scenarios() -> list[Scenario]:
    """Each component's own gauges vanish with it (metrics.export): the alerts reading them go
    silent, and ConveyorComponentDown pages for the component instead, whatever its gauges read
    last. Up series as Prometheus writes them for a dead target (0) or a gone task (absent)."""
    relay_gauges = {
        _queue(RELAY_A, "dlq", "visible"): "4x5",
        f"conveyor_outbox_oldest_age_seconds{{{RELAY_A}}}": "400x5",
        _age(RELAY_A): "0+60x5",
    }
    others = {_up(API_A): "1x20", _up(WORKER_A): "1x20"}
    relay_alerts = (DLQ, OUTBOX, NOT_CONSUMED)
    return [
        Scenario(
            name="relay absent: its queue, DLQ and outbox gauges stop, ComponentDown pages for "
            "the relay",
            series={**relay_gauges, _up(RELAY_A): "1x5 0x15", **others},
            checks=[
                AlertCheck(14, COMPONENT_DOWN, [{"job": "conveyor-relay"}]),
                *(AlertCheck(14, alert) for alert in relay_alerts),
            ],
        ),
        Scenario(
            name="relay task gone with its collector (no up at all): ComponentDown pages",
            # Its last up goes stale 5 minutes after minute 5; absent for 5 more, it pages.
            series={**relay_gauges, _up(RELAY_A): "1x5", **others},
            checks=[AlertCheck(18, COMPONENT_DOWN, [{"job": "conveyor-relay"}])],
        ),
        Scenario(
            name="all workers absent: ComponentDown pages for the workers; the queue's head "
            "ages and TasksNotConsumed pages too",
            series={
                _up(WORKER_A): "1x5 0x15",
                _up(API_A): "1x20",
                _up(RELAY_A): "1x20",
                _age(RELAY_A): "0x5 0+60x15",
            },
            checks=[
                AlertCheck(14, COMPONENT_DOWN, [{"job": "conveyor-worker"}]),
                AlertCheck(14, NOT_CONSUMED, [DEFAULT_LANE]),
            ],
        ),
        Scenario(
            name="API absent: ComponentDown pages for the api",
            series={_up(API_A): "1x5 0x15", _up(RELAY_A): "1x20", _up(WORKER_A): "1x20"},
            checks=[AlertCheck(14, COMPONENT_DOWN, [{"job": "conveyor-api"}])],
        ),
    ]


def _breaker_scenarios() -> list[Scenario]:
    def state(instance: str) -> str:
        return f'conveyor_circuit_breaker_state{{{instance},dependency="dynamodb"}}'

    worker_dynamodb = {"job": "conveyor-worker", "dependency": "dynamodb"}
    return [
        Scenario(
            name="a breaker open for 5 minutes pages per job and dependency; closing resolves it",
            series={state(WORKER_A): "0x5 2x15 0x10", state(API_A): "0x30"},
            checks=[
                AlertCheck(9, BREAKER),
                AlertCheck(13, BREAKER, [worker_dynamodb]),
                AlertCheck(26, BREAKER),
            ],
        ),
        Scenario(
            name="half-open probes between open periods do not reset the clock",
            series={state(WORKER_A): "0 " + "2 1 2 " * 6 + "2"},
            checks=[AlertCheck(12, BREAKER, [worker_dynamodb])],
        ),
        Scenario(
            name="a breaker open for a minute is silent",
            series={state(WORKER_A): "0x5 2 0x20"},
            checks=[AlertCheck(8, BREAKER), AlertCheck(12, BREAKER)],
        ),
        Scenario(
            name="a breaker stuck half-open is silent",
            series={state(WORKER_A): "1x20"},
            checks=[AlertCheck(15, BREAKER)],
        ),
    ]


def _target_scenarios() -> list[Scenario]:
    api_a = {"job": "conveyor-api", "instance": f"{TASK_ARN}/api-a"}
    api_b = {"job": "conveyor-api", "instance": f"{TASK_ARN}/api-b"}
    others = {_up(RELAY_A): "1x20", _up(WORKER_A): "1x20"}
    return [
        Scenario(
            name="one instance down for 5 minutes warns; the component is still up",
            series={_up(API_A): "1x5 0x15", _up(API_B): "1x20", **others},
            checks=[
                AlertCheck(9, TARGET_DOWN),
                AlertCheck(13, TARGET_DOWN, [api_a]),
                AlertCheck(13, COMPONENT_DOWN),
            ],
        ),
        Scenario(
            name="a scrape failing for 2 minutes is silent",
            series={_up(API_A): "1x5 0 0 1x12", _up(API_B): "1x20", **others},
            checks=[AlertCheck(8, TARGET_DOWN), AlertCheck(12, TARGET_DOWN)],
        ),
        Scenario(
            name="every api instance down pages once for the api",
            series={_up(API_A): "0x20", _up(API_B): "0x20", **others},
            checks=[
                AlertCheck(3, COMPONENT_DOWN),
                AlertCheck(10, COMPONENT_DOWN, [{"job": "conveyor-api"}]),
                AlertCheck(10, TARGET_DOWN, [api_a, api_b]),
            ],
        ),
        Scenario(
            name="a component that stopped reporting altogether pages",
            series={_up(API_A): "1x20", _up(RELAY_A): "1x20"},
            checks=[AlertCheck(10, COMPONENT_DOWN, [{"job": "conveyor-worker"}])],
        ),
        Scenario(
            name="every component up is silent",
            series={_up(API_A): "1x20", **others},
            checks=[AlertCheck(10, COMPONENT_DOWN), AlertCheck(10, TARGET_DOWN)],
        ),
    ]


def _quota_scenarios() -> list[Scenario]:
    def refusals(instance: str, tenant: str) -> str:
        return f'conveyor_quota_refusals_total{{{instance},tenant="{tenant}",quota="submit_rate"}}'

    return [
        Scenario(
            name="a tenant refused 1.5 times a second on each of two replicas for 15 minutes "
            "raises one ticket for it; a tenant refused once a second in all does not",
            series={
                refusals(API_A, "acme"): "0+90x40",
                refusals(API_B, "acme"): "0+90x40",
                refusals(API_A, "globex"): "0+30x40",
                refusals(API_B, "globex"): "0+30x40",
            },
            checks=[
                AlertCheck(10, QUOTA),
                AlertCheck(30, QUOTA, [{"tenant": "acme", "quota": "submit_rate"}]),
            ],
        ),
        Scenario(
            name="a 5-minute burst of refusals (a client that then backs off) stays silent",
            series={refusals(API_A, "acme"): "0+300x5 1500x35"},
            checks=[AlertCheck(5, QUOTA), AlertCheck(25, QUOTA)],
        ),
    ]


def symptom_scenarios() -> list[Scenario]:
    return [
        *_dlq_scenarios(),
        *_outbox_scenarios(),
        *_not_consumed_scenarios(),
        *_component_absent_scenarios(),
        *_breaker_scenarios(),
        *_target_scenarios(),
        *_quota_scenarios(),
    ]
