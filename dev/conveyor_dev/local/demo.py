"""The demo load: a mix of task types submitted over gRPC, and the tally of how they ended."""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from conveyor.api.convert import TERMINAL_STATES
from conveyor.schedules import slot_key_prefix
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc
from google.protobuf.timestamp_pb2 import Timestamp

TERMINAL = TERMINAL_STATES

# (weight, task type, payload maker, max_attempts, cancel after submit)
PayloadMaker = Callable[[random.Random], dict[str, float]]
Kind = tuple[int, str, PayloadMaker, int, bool]
MIX: tuple[Kind, ...] = (
    (80, "demo.sleep", lambda r: {"seconds": round(r.uniform(0.05, 0.5), 2)}, 5, False),
    (10, "demo.flaky", lambda r: {"fail_times": r.choice((1, 2))}, 5, False),
    (5, "demo.reject", lambda r: {}, 3, False),
    (5, "demo.sleep", lambda r: {"seconds": 30}, 3, True),
)
# Poison tasks (they end DEAD, into the DLQ) are not drawn but placed: every POISON_EVERY-th
# submit of the mix. The task-success SLO's budget is 0.5 % DEAD, and its page fires when over
# 3 % die over both windows of a pair (6x the budget, the 6h/30m pair; a fresh Prometheus has
# only the run's minutes in both). Drawn at random, a few early poison tasks would cross that
# before the mix evens out, and the demo would page itself (issue 17: a healthy demo pages
# nothing). Placed, the first comes after about 90 finished tasks and their share stays near
# 1 %: the DLQ gets its dead letters (a ticket, ConveyorDlqNotEmpty) and nobody is paged.
POISON_EVERY = 100
POISON: Kind = (0, "demo.poison", lambda r: {}, 3, False)


@dataclass
class Submitted:
    task_id: str
    task_type: str
    expect_cancel: bool
    timing: str = ""  # "delayed", "deadline" or "expiring" for the timed tasks
    tenant: str = ""  # the second tenant's name for its tasks, "" for the first's


# The timed tasks the demo submits first, in seconds from their submit: (kind, how many,
# not_before, start_by). The expiring one's start_by is a millisecond after its due time,
# which the relay's send cannot meet: it ends EXPIRED, never run.
TIMED: tuple[tuple[str, int, float, float], ...] = (
    ("delayed", 3, 3.0, 0.0),
    ("deadline", 2, 0.0, 120.0),
    ("expiring", 1, 2.0, 2.001),
)


def _at(seconds_from_now: float) -> Timestamp | None:
    if not seconds_from_now:
        return None
    ts = Timestamp()
    ts.FromMilliseconds(time.time_ns() // 1_000_000 + int(seconds_from_now * 1000))
    return ts


# The demo's recurring schedule: a no-op task every minute, one per minute's slot (the relay
# fires them).
SCHEDULE = pb.Schedule(
    name="demo-every-minute",
    cron="* * * * *",
    time_zone="UTC",
    task_type="demo.noop",
    payload=b"{}",
)


# The share of the mix the second tenant submits: a tenant of its own, with its own message
# groups and quotas, beside the first one's load.
SECOND_TENANT_SHARE = 0.3
# The share of the mix submitted in the high priority lane (the rest in the default lane).
HIGH_LANE_SHARE = 0.2


@dataclass
class DemoLoad:
    stub: pb_grpc.TaskServiceStub
    seed: int = 7
    submitted: list[Submitted] = field(default_factory=list)
    rejected: int = 0
    # A second tenant's (name, stub): it submits SECOND_TENANT_SHARE of the mix.
    second: tuple[str, pb_grpc.TaskServiceStub] | None = None

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        # The lanes drawn from a stream of their own: the mix's draws stay what they were (its
        # early share of failures decides whether the healthy demo pages itself: issue 17).
        self._lanes = random.Random(self.seed + 1)
        self._lock = threading.Lock()
        self._drawn = 0  # submits of the mix so far

    def submit_one(self) -> Submitted | None:
        """Submit one task of the mix (thread-safe); None if the API refused it."""
        with self._lock:
            self._drawn += 1
            if self._drawn % POISON_EVERY == 0:
                kind = POISON
            else:
                kind = self._random.choices(MIX, [m[0] for m in MIX])[0]
            _, task_type, make, max_attempts, cancel = kind
            payload = json.dumps(make(self._random)).encode()
            theirs = self.second is not None and self._random.random() < SECOND_TENANT_SHARE
            lane = "high" if self._lanes.random() < HIGH_LANE_SHARE else "default"
        tenant, stub = self.second if theirs and self.second else ("", self.stub)
        request = pb.SubmitTaskRequest(
            task_type=task_type,
            payload=payload,
            idempotency_key=uuid.uuid4().hex,
            max_attempts=max_attempts,
            lane=lane,
        )
        try:
            response = stub.SubmitTask(request, timeout=5)
        except grpc.RpcError:
            with self._lock:
                self.rejected += 1
            return None
        item = Submitted(response.task.task_id, task_type, cancel, tenant=tenant)
        with self._lock:
            self.submitted.append(item)
        if cancel:
            stub.CancelTask(
                pb.CancelTaskRequest(task_id=item.task_id, reason="demo cancel"), timeout=5
            )
        return item

    def submit_timed(self) -> None:
        """Submit the TIMED tasks: delayed ones, ones with a deadline met, one that expires."""
        for kind, count, not_before, start_by in TIMED:
            for _ in range(count):
                request = pb.SubmitTaskRequest(
                    task_type="demo.sleep",
                    payload=b'{"seconds": 0.05}',
                    idempotency_key=uuid.uuid4().hex,
                    not_before=_at(not_before),
                    start_by=_at(start_by),
                )
                response = self.stub.SubmitTask(request, timeout=5)
                with self._lock:
                    self.submitted.append(
                        Submitted(response.task.task_id, "demo.sleep", False, kind)
                    )

    def create_schedule(self) -> None:
        self.stub.CreateSchedule(pb.CreateScheduleRequest(schedule=SCHEDULE), timeout=5)

    def scheduled(self) -> dict[str, int]:
        """The schedule's tasks so far, by state: those of its type whose idempotency key names
        the schedule (a demo.noop submitted by hand meanwhile is not one of them)."""
        tasks = self.stub.ListTasks(pb.ListTasksRequest(task_type=SCHEDULE.task_type), timeout=10)
        prefix = slot_key_prefix(SCHEDULE.name)
        return dict(
            Counter(
                pb.TaskState.Name(t.state).removeprefix("TASK_STATE_")
                for t in tasks
                if t.idempotency_key.startswith(prefix)
            )
        )

    def by_tenant(self, first: str) -> dict[str, int]:
        """Tasks submitted by each tenant (`first` names the first one's)."""
        with self._lock:
            return dict(Counter(item.tenant or first for item in self.submitted))

    def states(self) -> dict[str, pb.Task]:
        """Current state of every submitted task (strongly consistent reads)."""
        out = {}
        with self._lock:
            submitted = list(self.submitted)
        for item in submitted:
            stub = self.second[1] if item.tenant and self.second else self.stub
            out[item.task_id] = stub.GetTask(
                pb.GetTaskRequest(task_id=item.task_id), timeout=5
            ).task
        return out


@dataclass(frozen=True)
class Summary:
    submitted: int
    by_state: dict[str, int]
    lost: int
    tasks_per_second: float
    p50_seconds: float
    p99_seconds: float
    aws_requests_per_task: float
    dollars_per_million_tasks: float
    delayed: int = 0  # tasks submitted with a not_before
    delayed_succeeded: int = 0
    with_deadline: int = 0  # tasks submitted with a start_by (EXPIRED ones are in by_state)
    by_tenant: dict[str, int] = field(default_factory=dict)  # tasks submitted, by tenant
    scheduled: dict[str, int] = field(default_factory=dict)  # the schedule's tasks, by state
    # Per priority lane: its tasks by state, and its submit -> end p50 (succeeded), in seconds.
    by_lane: dict[str, dict[str, int]] = field(default_factory=dict)
    lane_p50_seconds: dict[str, float] = field(default_factory=dict)


def summarize(
    tasks: dict[str, pb.Task], elapsed_seconds: float, aws_requests: float, dollars: float
) -> Summary:
    """`aws_requests` and `dollars` are the run's totals, spread over its tasks."""
    by_state = Counter(
        pb.TaskState.Name(t.state).removeprefix("TASK_STATE_") for t in tasks.values()
    )
    done = [t for t in tasks.values() if t.state in TERMINAL]
    delayed = [t for t in tasks.values() if t.HasField("not_before")]
    latencies = sorted(
        (t.updated_at.ToMilliseconds() - t.created_at.ToMilliseconds()) / 1000
        for t in done
        if t.state == pb.TASK_STATE_SUCCEEDED
    )

    def pct(q: float, values: list[float] | None = None) -> float:
        values = latencies if values is None else values
        if not values:
            return 0.0
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]

    by_lane: dict[str, Counter[str]] = {}
    lane_latencies: dict[str, list[float]] = {}
    for t in tasks.values():
        by_lane.setdefault(t.lane, Counter())[
            pb.TaskState.Name(t.state).removeprefix("TASK_STATE_")
        ] += 1
        if t.state == pb.TASK_STATE_SUCCEEDED:
            seconds = (t.updated_at.ToMilliseconds() - t.created_at.ToMilliseconds()) / 1000
            lane_latencies.setdefault(t.lane, []).append(seconds)

    return Summary(
        submitted=len(tasks),
        by_state=dict(by_state),
        lost=len(tasks) - len(done),
        tasks_per_second=len(done) / elapsed_seconds if elapsed_seconds > 0 else 0.0,
        p50_seconds=pct(50),
        p99_seconds=pct(99),
        aws_requests_per_task=aws_requests / len(tasks) if tasks else 0.0,
        dollars_per_million_tasks=dollars / len(tasks) * 1e6 if tasks else 0.0,
        delayed=len(delayed),
        delayed_succeeded=sum(1 for t in delayed if t.state == pb.TASK_STATE_SUCCEEDED),
        with_deadline=sum(1 for t in tasks.values() if t.HasField("start_by")),
        by_lane={lane: dict(states) for lane, states in by_lane.items()},
        lane_p50_seconds={lane: pct(50, sorted(v)) for lane, v in lane_latencies.items()},
    )
