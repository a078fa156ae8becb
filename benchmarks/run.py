"""`make bench`: Conveyor against a raw-call floor, side by side in one run on this machine.

Every phase gets a fresh emulator with the stack's resources (as `make local` creates them):

1. floor: `benchmarks/floor.py` at the concurrency of Conveyor's 2-worker system;
2. throughput: Conveyor with 1, 2 and 4 worker processes, no-op tasks from 8 clients;
3. steady state: 2 workers at --rate tasks/s: AWS requests per task by operation and process
   (every process, relay and idle polling included), enqueue->start and end-to-end latency;
   then idle requests per worker-hour, then SubmitTask at 50 concurrent clients against the
   same AWS calls made directly;
4. billing: the same system behind `conveyor_dev.local.meter`'s metering proxy, for 1 KB and 64 KB
   payloads, and the floor behind it too: DynamoDB units and SQS billed requests per task;
5. fairness: tenant B's first task behind tenant A's --backlog (benchmarks/fairness.py).
6. delayed: --delayed-tasks delayed tasks due at one moment: due time to QUEUED p50/p99.
7. lanes: --lanes-backlog default-lane tasks queued at once, then --lanes-high high-lane tasks
   submitted one by one: the high lane's submit -> start p50/p99, and the default lane's tasks/s
   while the high lane is busy against its tasks/s overall.
8. peers: three sequences, each on one emulator behind one metering proxy: Conveyor (2 workers
   x 4 slots), the floor, dramatiq + dramatiq_sqs and Celery on SQS
   (benchmarks/peer_systems.py), the same tasks, clients and slots: tasks/s, ratio to the
   floor, requests per task by operation, CPU per task, end-to-end p50/p99.

Figures from one machine are only comparable within a run (the machine is shared and noisy),
hence the ratios. Printed as a table and written to benchmarks/results/bench-<time>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from conveyor.aws import AwsClients, make_breaker
from conveyor.queue import TaskQueue
from conveyor.settings import WorkerSettings, lane_url_fields
from conveyor.store import MAX_BATCH_TASKS, TaskStore
from conveyor.v1 import task_service_pb2 as pb
from conveyor_dev.emulators.backend import Backend, start_backend
from conveyor_dev.local.meter import PRICE_RRU, PRICE_SQS_FIFO_REQUEST, PRICE_WRU, MeteringProxy
from conveyor_dev.local.scrape import samples
from conveyor_dev.local.system import LocalSystem
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.table import Table

from benchmarks.fairness import phase_fairness
from benchmarks.floor import FloorResult, run_floor
from benchmarks.peer_systems import PEERS, Run, by_operation, run_peer, summarize

RESULTS = Path(__file__).with_name("results")
TENANT = "bench"
TASK_TYPE = "demo.noop"
CLIENTS = 8
SLOTS = 4  # CONVEYOR_WORKER_CONCURRENCY of the local tuning
STEADY_SLOTS = 10
PHASES = ("floor", "throughput", "steady", "billing", "fairness", "delayed", "lanes", "peers")
SEQUENCES = 3  # of the peer phase
# Polling and relay cadence as deployed (the settings' defaults), not the local run's faster
# ones: idle polling and relay sweeps are part of the cost per task being measured.
# The tenant's submit quota out of the way (its check still runs): the phases submit as fast as
# their clients can, 500 at once from 50 in the steady phase, and a 100/s quota would refuse
# them (RESOURCE_EXHAUSTED) or set the rate being measured.
BENCH_TUNING = {
    "CONVEYOR_POLL_WAIT_SECONDS": "5",
    "CONVEYOR_RELAY_INTERVAL_SECONDS": "5",
    "CONVEYOR_OUTBOX_AGE_SECONDS": "10",
    "CONVEYOR_TENANT_SUBMITS_PER_SECOND": "100000",
    "CONVEYOR_TENANT_SUBMIT_BURST": "100000",
}
console = Console()


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def p50_p99(values: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99)}


def payload_of(size: int) -> bytes:
    """A JSON object of `size` bytes (the demo handlers take JSON payloads)."""
    head = b'{"pad": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


# ---- the system ----
@contextmanager
def system_on(
    backend: Backend,
    workers: int,
    endpoint: str | None = None,
    slots: int = SLOTS,
    tuning: dict[str, str] | None = None,
) -> Iterator[LocalSystem]:
    """The stack provisioned in `backend`, its services started (talking to `endpoint`, the
    metering proxy, if given)."""
    # The services' logs stay in benchmarks/results/runs/ for a look afterwards.
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{workers}w-{uuid.uuid4().hex[:4]}"
    system = LocalSystem.provision(
        RESULTS / "runs" / stamp,
        backend,
        (TENANT,),
        tuning={**BENCH_TUNING, "CONVEYOR_WORKER_CONCURRENCY": str(slots), **(tuning or {})},
    )
    if endpoint:
        system.backend = dataclasses.replace(backend, endpoint_url=endpoint, service_endpoints={})
    try:
        system.start(workers=workers)
        yield system
    finally:
        system.stop()


def aws_requests(system: LocalSystem) -> dict[str, dict[str, float]]:
    """conveyor_aws_requests_total per process, by `service.operation`."""
    out: dict[str, dict[str, float]] = {}
    for name, proc in system.procs.items():
        counts: dict[str, float] = defaultdict(float)
        for s in samples(proc.metrics_url):
            if s.name == "conveyor_aws_requests_total":
                counts[f"{s.labels['service']}.{s.labels['operation']}"] += s.value
        out[name] = dict(counts)
    return out


def cpu_seconds(system: LocalSystem) -> dict[str, float]:
    """User plus system CPU time of each of the system's processes, from /proc/<pid>/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for name, proc in system.procs.items():
        # The fields after the command name (which may hold spaces) start at the state, #3.
        fields = Path(f"/proc/{proc.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        out[name] = (int(fields[11]) + int(fields[12])) / tick  # utime #14, stime #15
    return out


def delta(
    after: dict[str, dict[str, float]], before: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    return {
        proc: {
            op: n - before.get(proc, {}).get(op, 0.0)
            for op, n in ops.items()
            if n - before.get(proc, {}).get(op, 0.0)
        }
        for proc, ops in after.items()
    }


def completed(system: LocalSystem) -> float:
    return sum(
        s.value
        for name, proc in system.procs.items()
        if name.startswith("worker")
        for s in samples(proc.metrics_url)
        if s.name == "conveyor_tasks_completed_total" and s.labels.get("outcome") == "succeeded"
    )


def wait_completed(system: LocalSystem, count: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while completed(system) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} tasks did not complete within {timeout}s")
        time.sleep(0.1)


def submit_all(
    system: LocalSystem, count: int, clients: int, payload: bytes, rate: float | None = None
) -> tuple[list[str], list[float]]:
    """Submit `count` no-op tasks from `clients` threads (at `rate` tasks/s if given);
    returns the task ids and each SubmitTask's round trip in ms."""
    ids: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    started = time.monotonic()
    with system.channel(TENANT) as channel:
        stub = system.stub(channel)

        def one(i: int) -> None:
            if rate:
                time.sleep(max(0.0, started + i / rate - time.monotonic()))
            t0 = time.perf_counter()
            task = stub.SubmitTask(
                pb.SubmitTaskRequest(
                    task_type=TASK_TYPE, payload=payload, idempotency_key=uuid.uuid4().hex
                ),
                timeout=30,
            ).task
            with lock:
                latencies.append((time.perf_counter() - t0) * 1000)
                ids.append(task.task_id)

        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, range(count)))
    return ids, latencies


# ---- phases ----
def phase_floor(tasks: int, payload: bytes) -> dict[str, Any]:
    with start_backend() as backend, tempfile.TemporaryDirectory() as tmp:
        system = LocalSystem.provision(Path(tmp), backend, (TENANT,))
        console.print(f"[bold]floor:[/] {tasks} tasks, {CLIENTS} clients, {2 * SLOTS} consumers")
        direct = _floor_on(
            system, backend.endpoint_url, backend.endpoint_for("dynamodb"), tasks, payload
        ).as_dict()
        # The metering proxy's own cost: the same floor through it, on the same emulator.
        proxy = MeteringProxy(backend.endpoint_url, backend.endpoint_for("dynamodb"))
        try:
            metered = _floor_on(system, proxy.url, proxy.url, tasks, payload).as_dict()
        finally:
            proxy.close()
        ratio = metered["tasks_per_second"] / direct["tasks_per_second"]
        return {**direct, "through_meter": metered, "meter_ratio": ratio}


def _floor_on(
    system: LocalSystem, endpoint: str, dynamodb_endpoint: str, tasks: int, payload: bytes
) -> FloorResult:
    """The floor script on `system`'s table and queue, at the bench's concurrency."""
    return run_floor(
        endpoint=endpoint,
        dynamodb_endpoint=dynamodb_endpoint,
        region=system.backend.region,
        table=system.table_name,
        queue_url=system.queue_url,
        tasks=tasks,
        clients=CLIENTS,
        consumers=2 * SLOTS,
        payload=payload,
    )


def phase_throughput(workers: int, tasks: int, payload: bytes) -> dict[str, Any]:
    with start_backend() as backend, system_on(backend, workers) as system:
        console.print(f"[bold]throughput:[/] {workers} worker process(es), {tasks} tasks")
        before, cpu_before = aws_requests(system), cpu_seconds(system)
        started = time.perf_counter()
        submit_all(system, tasks, CLIENTS, payload)
        wait_completed(system, tasks, timeout=300)
        elapsed = time.perf_counter() - started
        used, cpu = delta(aws_requests(system), before), cpu_seconds(system)
    cpu_ms = {name: (cpu[name] - cpu_before[name]) * 1000 / tasks for name in sorted(cpu)}
    by_op: dict[str, float] = defaultdict(float)
    for ops in used.values():
        for op, n in ops.items():
            by_op[op] += n / tasks
    return {
        "workers": workers,
        "tasks": tasks,
        "seconds": elapsed,
        "tasks_per_second": tasks / elapsed,
        "requests_per_task": sum(by_op.values()),
        "requests_per_task_by_operation": dict(sorted(by_op.items())),
        "cpu_ms_per_task_by_process": cpu_ms,
        "cpu_ms_per_task": sum(cpu_ms.values()),
    }


def _latencies(system: LocalSystem, ids: list[str]) -> dict[str, dict[str, float]]:
    to_start, end_to_end = _task_latencies(system, ids)
    return {"enqueue_to_start": p50_p99(to_start), "end_to_end": p50_p99(end_to_end)}


def _task_latencies(system: LocalSystem, ids: list[str]) -> tuple[list[float], list[float]]:
    """Submit -> first RUNNING and submit -> SUCCEEDED in ms, from each task's history."""
    to_start, end_to_end = [], []
    with system.channel(TENANT) as channel:
        stub = system.stub(channel)
        for task_id in ids:
            got = stub.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10)
            created = got.task.created_at.ToMilliseconds()
            at = {e.to_state: e.at.ToMilliseconds() for e in reversed(got.events)}
            to_start.append(at[pb.TASK_STATE_RUNNING] - created)
            end_to_end.append(at[pb.TASK_STATE_SUCCEEDED] - created)
    return to_start, end_to_end


def _submit_batch(stub: Any, request: pb.SubmitTasksRequest) -> pb.SubmitTasksResponse:
    """SubmitTasks, honouring the quota's retry-after (the same request again: it replays)."""
    while True:
        try:
            return stub.SubmitTasks(request, timeout=30)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            after = dict(err.trailing_metadata() or ()).get("retry-after", "1")
            time.sleep(float(after))


def phase_delayed(tasks: int) -> dict[str, Any]:
    """`tasks` delayed tasks all due at one moment, submitted in batches (SubmitTasks) more than
    a relay interval before it: the lag from their due time to QUEUED in each one's history
    (recorded by the relay after its send, or by the claim if that came first: an upper bound
    on reaching the queue)."""
    with start_backend() as backend, system_on(backend, 2) as system:
        console.print(f"[bold]delayed:[/] {tasks} tasks due at once, 2 worker processes")
        interval = float(BENCH_TUNING["CONVEYOR_RELAY_INTERVAL_SECONDS"])
        with system.channel(TENANT) as channel:
            stub = system.stub(channel)
            # Room to submit them all before they come due (allowing 100 a second).
            due = time.time_ns() // 1_000_000 + int((2 * interval + tasks / 100 + 5) * 1000)
            not_before = Timestamp()
            not_before.FromMilliseconds(due)
            ids: list[str] = []
            for start in range(0, tasks, MAX_BATCH_TASKS):
                batch = [
                    pb.SubmitTaskRequest(
                        task_type=TASK_TYPE,
                        payload=b"{}",
                        idempotency_key=uuid.uuid4().hex,
                        not_before=not_before,
                    )
                    for _ in range(min(MAX_BATCH_TASKS, tasks - start))
                ]
                answer = _submit_batch(stub, pb.SubmitTasksRequest(tasks=batch))
                ids += [r.task.task_id for r in answer.results]
            submitted_before_due_s = (due - time.time_ns() // 1_000_000) / 1000
            wait_completed(system, tasks, timeout=300)
            lags = []
            for task_id in ids:
                got = stub.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10)
                queued = next(e for e in got.events if e.to_state == pb.TASK_STATE_QUEUED)
                lags.append(queued.at.ToMilliseconds() - due)
    return {
        "tasks": tasks,
        "submitted_before_due_seconds": submitted_before_due_s,
        "due_to_queued": p50_p99(lags),
        "early": sum(1 for lag in lags if lag < 0),
    }


# The lanes phase: with BENCH_TUNING's submit quota out of the way the default lane is full
# before the first high task comes (at the default 100/s, 1,000 tasks take 8 s to submit while
# workers drain them). The settings' default of 32 message groups per tenant and type, not the
# local run's 4: with 4, one tenant's default lane runs at most a few groups' worth at a time
# (about 12 tasks/s here), whatever the lanes do.
LANES_TUNING = {"CONVEYOR_MESSAGE_GROUP_SHARDS": "32"}
LANES_TASK_SECONDS = 0.05  # demo.sleep: 2 workers x 4 slots run at most 160 a second


def _runs(stub: Any, ids: list[str]) -> list[tuple[int, int]]:
    """(created, first RUNNING) in ms of each task of `ids`."""

    def one(task_id: str) -> tuple[int, int]:
        got = stub.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10)
        started = next(e for e in got.events if e.to_state == pb.TASK_STATE_RUNNING)
        return got.task.created_at.ToMilliseconds(), started.at.ToMilliseconds()

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, ids))


def phase_lanes(backlog: int, high: int, high_rate: float) -> dict[str, Any]:
    """A full default lane (`backlog` tasks submitted at once), then `high` high-lane tasks
    submitted one by one at `high_rate` a second: each high task's submit -> start, and the
    default lane's throughput while the high lane is busy (its tasks started between the
    first high submit and the last high start) against its throughput overall."""
    with (
        start_backend() as backend,
        system_on(backend, 2, tuning=LANES_TUNING) as system,
        system.channel(TENANT) as channel,
    ):
        console.print(
            f"[bold]lanes:[/] {backlog} default tasks queued, then {high} high tasks at "
            f"{high_rate:g}/s; 2 worker processes x {SLOTS} slots, demo.sleep "
            f"{LANES_TASK_SECONDS} s"
        )
        stub = system.stub(channel)
        body = json.dumps({"seconds": LANES_TASK_SECONDS}).encode()

        def request(lane: str) -> pb.SubmitTaskRequest:
            return pb.SubmitTaskRequest(
                task_type="demo.sleep", payload=body, idempotency_key=uuid.uuid4().hex, lane=lane
            )

        default_ids: list[str] = []
        for start in range(0, backlog, MAX_BATCH_TASKS):
            batch = [request("default") for _ in range(min(MAX_BATCH_TASKS, backlog - start))]
            answer = _submit_batch(stub, pb.SubmitTasksRequest(tasks=batch))
            default_ids += [r.task.task_id for r in answer.results]
        high_ids = []
        for _ in range(high):
            high_ids.append(stub.SubmitTask(request("high"), timeout=10).task.task_id)
            time.sleep(1 / high_rate)
        wait_completed(system, backlog + high, timeout=600)
        high_runs, default_runs = _runs(stub, high_ids), _runs(stub, default_ids)
    busy_from = min(created for created, _ in high_runs)
    busy_to = max(started for _, started in high_runs)
    during = sum(1 for _, started in default_runs if busy_from <= started <= busy_to)
    default_starts = [started for _, started in default_runs]
    whole = (max(default_starts) - min(default_starts)) / 1000
    return {
        "default_backlog": backlog,
        "high_tasks": high,
        "high_rate": high_rate,
        "task_seconds": LANES_TASK_SECONDS,
        "high_submit_to_start": p50_p99([started - created for created, started in high_runs]),
        "high_busy_seconds": (busy_to - busy_from) / 1000,
        "default_started_while_high_busy": during,
        "default_tasks_per_second_while_high_busy": during
        / max(1e-3, (busy_to - busy_from) / 1000),
        "default_tasks_per_second_overall": backlog / max(1e-3, whole),
        "default_left_when_last_high_started": sum(1 for s in default_starts if s > busy_to),
    }


def _lanes(backlog: int, high: int, high_rate: float) -> dict[str, Any]:
    result = phase_lanes(backlog, high, high_rate)
    latency = result["high_submit_to_start"]
    console.print(
        f"[bold]lanes:[/] high lane submit -> start p50 {latency['p50_ms']:.0f} ms, p99 "
        f"{latency['p99_ms']:.0f} ms behind {backlog} default tasks; the default lane ran "
        f"{result['default_tasks_per_second_while_high_busy']:.1f} tasks/s while the high lane "
        f"was busy ({result['default_tasks_per_second_overall']:.1f} tasks/s overall), with "
        f"{result['default_left_when_last_high_started']} still waiting at the last high start"
    )
    return result


OVERHEAD = "conveyor_api_overhead_seconds"
OVERHEAD_CPU = "conveyor_api_overhead_cpu_seconds"


def _overhead_buckets(system: LocalSystem, metric: str = OVERHEAD) -> dict[float, float]:
    """The API's `metric`{grpc_method="SubmitTask"} cumulative buckets."""
    return {
        float(s.labels["le"]): s.value
        for s in samples(system.procs["api"].metrics_url)
        if s.name == f"{metric}_bucket" and s.labels.get("grpc_method") == "SubmitTask"
    }


def _quantiles_from(after: dict[float, float], before: dict[float, float]) -> dict[str, float]:
    """p50/p99 as the bucket bounds they fall under, and the share within the 3 ms target."""
    counts = {le: n - before.get(le, 0.0) for le, n in sorted(after.items())}
    total = counts.get(float("inf"), 0.0)

    def bound(q: float) -> float:
        return next((le for le, n in counts.items() if total and n >= q * total), float("nan"))

    return {
        "submits": total,
        "p50_at_most_ms": bound(0.5) * 1000,
        "p99_at_most_ms": bound(0.99) * 1000,
        "share_within_3ms": counts.get(0.003, 0.0) / total if total else float("nan"),
    }


def _direct_submit_ms(system: LocalSystem, count: int, clients: int, payload: bytes) -> list[float]:
    """The store call and the send SubmitTask makes, made directly with the same code at the
    same concurrency, without the API around them."""
    env = system.env()
    values: dict[str, Any] = {
        "AWS_REGION": env["AWS_REGION"],
        "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"],
        "table_name": system.table_name,
        **{
            field: url
            for lane, urls in system.lane_urls.items()
            for field, url in zip(lane_url_fields(lane), urls, strict=True)
        },
        "metrics_listen": "127.0.0.1:0",
    }
    settings = WorkerSettings(**values)
    clients_ = AwsClients(settings)
    store = TaskStore(clients_, settings, make_breaker(settings, "bench-dynamodb"))
    queue = TaskQueue(clients_, settings)
    latencies: list[float] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        t0 = time.perf_counter()
        result = store.submit(
            tenant=TENANT,
            task_type=TASK_TYPE,
            payload=payload,
            idempotency_key=uuid.uuid4().hex,
            request_hash=uuid.uuid4().hex,
            max_attempts=5,
        )
        queue.send(result.task.task_id, TASK_TYPE, tenant=TENANT)
        with lock:
            latencies.append((time.perf_counter() - t0) * 1000)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(count)))
    return latencies


def phase_steady(
    rate: float, seconds: float, idle_seconds: float, payload: bytes
) -> dict[str, Any]:
    tasks = int(rate * seconds)
    # 10 slots: a receive takes at most as many messages as there are free slots, and SQS
    # at most 10, so fewer slots would cap the receive batch below what the rate allows.
    with start_backend() as backend, system_on(backend, 2, slots=STEADY_SLOTS) as system:
        # The direct-call comparison's clients find the emulator's fake credentials here. Only
        # those: an AWS_ENDPOINT_URL left behind would make the next phase's start_backend
        # borrow this (by then stopped) emulator as an explicit endpoint.
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ.setdefault(key, system.backend.env()[key])
        console.print(f"[bold]steady state:[/] {tasks} tasks at {rate:g}/s, 2 workers x 10 slots")
        before = aws_requests(system)
        started = time.perf_counter()
        ids, _ = submit_all(system, tasks, CLIENTS, payload, rate=rate)
        wait_completed(system, tasks, timeout=300)
        elapsed = time.perf_counter() - started
        used = delta(aws_requests(system), before)
        console.print(f"[bold]idle:[/] {idle_seconds:g} s with 2 workers")
        idle_before = aws_requests(system)
        time.sleep(idle_seconds)  # the measurement window itself
        idle = delta(aws_requests(system), idle_before)
        latencies = _latencies(system, ids)
        console.print("[bold]submit latency:[/] 50 concurrent clients, API vs direct calls")
        done = completed(system)
        overhead_before = {m: _overhead_buckets(system, m) for m in (OVERHEAD, OVERHEAD_CPU)}
        _, api_ms = submit_all(system, 500, 50, payload)
        overhead, overhead_cpu = (
            _quantiles_from(_overhead_buckets(system, m), overhead_before[m])
            for m in (OVERHEAD, OVERHEAD_CPU)
        )
        direct_ms = _direct_submit_ms(system, 500, 50, payload)
        wait_completed(system, done + 500, timeout=300)
    by_op: dict[str, float] = defaultdict(float)
    for ops in used.values():
        for op, n in ops.items():
            by_op[op] += n / tasks
    per_hour = 3600 / idle_seconds
    return {
        "rate": rate,
        "workers": 2,
        "slots_per_worker": STEADY_SLOTS,
        "tasks": tasks,
        "seconds": elapsed,
        "tasks_per_second": tasks / elapsed,
        "requests_per_task": sum(by_op.values()),
        "requests_per_task_by_operation": dict(sorted(by_op.items())),
        "requests_per_task_by_process": {
            proc: sum(ops.values()) / tasks for proc, ops in sorted(used.items())
        },
        "idle_requests_per_hour_by_process": {
            proc: sum(ops.values()) * per_hour for proc, ops in sorted(idle.items())
        },
        "idle_requests_by_operation": {
            f"{proc} {op}": n for proc, ops in sorted(idle.items()) for op, n in ops.items()
        },
        **latencies,
        "submit_50_clients": {"api": p50_p99(api_ms), "direct_aws_calls": p50_p99(direct_ms)},
        "api_overhead_50_clients": overhead,
        # Its CPU part: the rest is waiting for the GIL or a core (the emulator shares them).
        "api_overhead_cpu_50_clients": overhead_cpu,
    }


def _billed(proxy: MeteringProxy, run: Callable[[], int]) -> dict[str, float]:
    before = proxy.billing.snapshot()
    tasks = run()
    after = proxy.billing.snapshot()
    out: dict[str, float] = {}
    for kind in ("wru", "rru", "sqs"):
        for op, units in after[kind].items():
            used = units - before[kind].get(op, 0.0)
            if used:
                out[f"{kind} {op}"] = used / tasks
    return out


def _dollars(per_task: dict[str, float]) -> float:
    price = {"wru": PRICE_WRU, "rru": PRICE_RRU, "sqs": PRICE_SQS_FIFO_REQUEST}
    return sum(price[k.split()[0]] * v for k, v in per_task.items()) * 1e6


def _summed(per_task: dict[str, float]) -> dict[str, Any]:
    return {
        "units_per_task": per_task,
        "wru_per_task": sum(v for k, v in per_task.items() if k[:3] == "wru"),
        "rru_per_task": sum(v for k, v in per_task.items() if k[:3] == "rru"),
        "sqs_billed_per_task": sum(v for k, v in per_task.items() if k[:3] == "sqs"),
        "dollars_per_million_tasks": _dollars(per_task),
    }


def phase_billing(tasks: int, rate: float) -> dict[str, Any]:
    """Everything billed while `tasks` tasks are submitted at `rate` and run (the steady
    phase's system: 2 workers x 10 slots), divided by the tasks: relay sweeps and polling at
    their real share of that rate included."""
    out: dict[str, Any] = {"rate": rate, "tasks": tasks}
    with start_backend() as backend:
        proxy = MeteringProxy(backend.endpoint_url, backend.endpoint_for("dynamodb"))
        try:
            with system_on(backend, 2, endpoint=proxy.url, slots=STEADY_SLOTS) as system:
                console.print(f"[bold]billing:[/] {tasks} tasks at {rate:g}/s, 1 KB then 64 KB")
                for label, size in (("1KB", 1024), ("64KB", 64 * 1024 - 512)):

                    def run(size: int = size) -> int:
                        done = completed(system)
                        submit_all(system, tasks, CLIENTS, payload_of(size), rate=rate)
                        wait_completed(system, done + tasks, timeout=300)
                        return tasks

                    out[label] = _summed(_billed(proxy, run))
            # The floor on the same (now idle) table and queue, through the same proxy.
            floor = _billed(
                proxy,
                lambda: _floor_on(system, proxy.url, proxy.url, tasks, payload_of(1024)).tasks,
            )
            out["floor_1KB"] = _summed(floor)
        finally:
            proxy.close()
    return out


def _peer_sequence(tasks: int, payload: bytes, logs: Path) -> dict[str, Run]:
    """Conveyor, the floor and the peers one after the other on one emulator, behind one
    metering proxy that counts every system's requests by operation."""
    runs: dict[str, Run] = {}
    with start_backend() as backend:
        proxy = MeteringProxy(backend.endpoint_url, backend.endpoint_for("dynamodb"))
        try:
            with system_on(backend, 2, endpoint=proxy.url) as system:
                before, cpu_before = proxy.billing.snapshot()["requests"], cpu_seconds(system)
                started = time.perf_counter()
                ids, _ = submit_all(system, tasks, CLIENTS, payload)
                wait_completed(system, tasks, timeout=300)
                elapsed = time.perf_counter() - started
                requests = by_operation(proxy.billing.snapshot()["requests"], before)
                cpu = sum(cpu_seconds(system).values()) - sum(cpu_before.values())
                _, end_to_end = _task_latencies(system, ids)
            runs["conveyor"] = Run(tasks, elapsed, requests, cpu, end_to_end)
            # The floor on the same (now stopped) system's table and queue. It runs inside
            # this process, with the proxy: its CPU is not separable.
            before = proxy.billing.snapshot()["requests"]
            floor = _floor_on(system, proxy.url, proxy.url, tasks, payload)
            requests = by_operation(proxy.billing.snapshot()["requests"], before)
            runs["floor"] = Run(floor.tasks, floor.seconds, requests, None, [])
            # And direct, for what the proxy costs the systems that write to DynamoDB (it
            # reads each written item before and after the write, to bill it); the floor
            # counts its own requests.
            direct = _floor_on(
                system, backend.endpoint_url, backend.endpoint_for("dynamodb"), tasks, payload
            )
            runs["floor, no proxy"] = Run(direct.tasks, direct.seconds, direct.requests, None, [])
            for peer in PEERS:
                console.print(f"  {peer}")
                runs[peer] = run_peer(peer, proxy, backend.region, tasks, CLIENTS, logs)
        finally:
            proxy.close()
    return runs


def phase_peers(tasks: int, payload: bytes) -> dict[str, Any]:
    logs = RESULTS / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-peers-{uuid.uuid4().hex[:4]}"
    runs: dict[str, list[Run]] = defaultdict(list)
    for n in range(SEQUENCES):
        console.print(f"[bold]peers:[/] sequence {n + 1} of {SEQUENCES}, {tasks} tasks each")
        for system, run in _peer_sequence(tasks, payload, logs / str(n)).items():
            runs[system].append(run)
    return {"tasks": tasks, "sequences": SEQUENCES, "systems": summarize(dict(runs))}


def peer_table(peers: dict[str, Any]) -> Table:
    table = Table(
        title=f"Conveyor, the floor and the SQS peers: {peers['tasks']} no-op tasks x "
        f"{peers['sequences']} sequences, {CLIENTS} clients, 2 x {SLOTS} slots, one proxy"
    )
    table.add_column("system")
    for column in ("tasks/s min/med/max", "/ floor", "req/task", "CPU ms/task", "e2e p50/p99 ms"):
        table.add_column(column, justify="right")

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    for system, s in peers["systems"].items():
        tps, e2e, cpu = s["tasks_per_second"], s["end_to_end_ms"], s["cpu_ms_per_task"]
        table.add_row(
            system,
            f"{tps['min']:.0f}/{tps['median']:.0f}/{tps['max']:.0f}",
            "/".join(f"{r:.2f}" for r in s["ratio_to_floor"]),
            f"{s['requests_per_task']:.2f}",
            "-" if cpu is None else f"{cpu:.1f}",
            f"{ms(e2e['p50'])}/{ms(e2e['p99'])}",
        )
        for op, n in s["requests_per_task_by_operation"].items():
            table.add_row(f"  {op}", "", "", f"{n:.2f}", "", "")
    return table


# ---- report ----
def report_table(report: dict[str, Any]) -> Table:
    table = Table(title="Conveyor vs the raw-call floor (one run, one machine)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    floor, steady, bill = report["floor"], report["steady"], report["billing"]
    two = report["throughput"]["2"]
    table.add_row("floor tasks/s (8 clients, 8 consumers)", f"{floor['tasks_per_second']:.1f}", "")
    table.add_row(
        "  through the metering proxy (its own cost)",
        f"{floor['through_meter']['tasks_per_second']:.1f} ({floor['meter_ratio']:.2f}x)",
        "",
    )
    table.add_row("Conveyor tasks/s, 2 workers x 4 slots", f"{two['tasks_per_second']:.1f}", "")
    table.add_row("ratio Conveyor / floor", f"{report['floor_ratio']:.2f}", ">= 0.8")
    for workers, result in report["throughput"].items():
        table.add_row(
            f"tasks/s, {workers} worker process(es)", f"{result['tasks_per_second']:.1f}", ""
        )
    table.add_row(
        "  2 workers: requests per task at saturation", f"{two['requests_per_task']:.2f}", ""
    )
    for op, n in two["requests_per_task_by_operation"].items():
        table.add_row(f"    {op}", f"{n:.2f}", "")
    table.add_row(
        "  2 workers: CPU ms per task, all processes", f"{two['cpu_ms_per_task']:.1f}", ""
    )
    for proc, ms in two["cpu_ms_per_task_by_process"].items():
        table.add_row(f"    process {proc}", f"{ms:.1f}", "")
    table.add_row("scaling 4 workers / 1", f"{report['scaling_4_vs_1']:.2f}", "")
    table.add_row(
        f"AWS requests per task at {steady['rate']:g}/s (all processes)",
        f"{steady['requests_per_task']:.2f}",
        "<= 4.5",
    )
    for op, n in steady["requests_per_task_by_operation"].items():
        table.add_row(f"  {op}", f"{n:.2f}", "")
    for proc, n in steady["requests_per_task_by_process"].items():
        table.add_row(f"  process {proc}", f"{n:.2f}", "")
    table.add_row("floor AWS requests per task", f"{floor['requests_per_task_total']:.2f}", "")
    for label in ("1KB", "64KB"):
        b = bill[label]
        table.add_row(
            f"{label} payload: WRU / RRU / SQS billed per task",
            f"{b['wru_per_task']:.2f} / {b['rru_per_task']:.2f} / {b['sqs_billed_per_task']:.2f}",
            "",
        )
        table.add_row(
            f"{label} payload: $ per million tasks at {bill['rate']:g}/s",
            f"${b['dollars_per_million_tasks']:.2f}",
            "<= $4" if label == "1KB" else "",
        )
    floor_bill = bill["floor_1KB"]
    table.add_row(
        "floor 1KB: WRU per task / $ per million",
        f"{floor_bill['wru_per_task']:.2f} / ${floor_bill['dollars_per_million_tasks']:.2f}",
        "",
    )
    sub = steady["submit_50_clients"]
    table.add_row(
        "SubmitTask p50 / p99, 50 clients",
        f"{sub['api']['p50_ms']:.1f} / {sub['api']['p99_ms']:.1f} ms",
        "",
    )
    table.add_row(
        "  its AWS calls made directly p50 / p99",
        f"{sub['direct_aws_calls']['p50_ms']:.1f} / {sub['direct_aws_calls']['p99_ms']:.1f} ms",
        "",
    )
    over = steady["api_overhead_50_clients"]
    table.add_row(
        "  API overhead (handling less its AWS calls) p50 / p99",
        f"<= {over['p50_at_most_ms']:g} / <= {over['p99_at_most_ms']:g} ms",
        "p99 <= 3 ms",
    )
    table.add_row("  submits with overhead <= 3 ms", f"{over['share_within_3ms']:.1%}", ">= 99%")
    cpu = steady["api_overhead_cpu_50_clients"]
    table.add_row(
        "  of which CPU (the rest waits for the GIL or a core) p50 / p99",
        f"<= {cpu['p50_at_most_ms']:g} / <= {cpu['p99_at_most_ms']:g} ms",
        "",
    )
    for key, label in (("enqueue_to_start", "enqueue -> start"), ("end_to_end", "end to end")):
        v = steady[key]
        table.add_row(f"{label} p50 / p99 (no-op)", f"{v['p50_ms']:.0f} / {v['p99_ms']:.0f} ms", "")
    table.add_row(
        "idle AWS requests per worker-hour",
        f"{report['idle_requests_per_worker_hour']:.0f}",
        "",
    )
    table.add_row("idle $ per worker-hour", f"${report['idle_dollars_per_worker_hour']:.5f}", "")
    delayed = report["delayed"]
    lag = delayed["due_to_queued"]
    table.add_row(
        f"due time -> QUEUED p50 / p99, {delayed['tasks']} delayed tasks due at once",
        f"{lag['p50_ms']:.0f} / {lag['p99_ms']:.0f} ms",
        "p99 <= 2000 ms",
    )
    lanes = report["lanes"]
    high = lanes["high_submit_to_start"]
    table.add_row(
        f"high lane submit -> start p50 / p99, {lanes['default_backlog']} default tasks queued",
        f"{high['p50_ms']:.0f} / {high['p99_ms']:.0f} ms",
        "",
    )
    table.add_row(
        "  default lane tasks/s while the high lane is busy / overall",
        f"{lanes['default_tasks_per_second_while_high_busy']:.1f} / "
        f"{lanes['default_tasks_per_second_overall']:.1f}",
        "",
    )
    return table


def _fairness(backlog: int) -> dict[str, Any]:
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-fairness-{uuid.uuid4().hex[:4]}"
    result = phase_fairness(backlog, RESULTS / "runs" / stamp)
    waited, ahead = result["b_start_after_processing_began_s"], result["a_tasks_started_before_b"]
    console.print(
        f"[bold]fairness:[/] tenant B's task started {waited:.2f} s after processing began, "
        f"behind {ahead} of tenant A's {backlog} (A's whole backlog took "
        f"{result['a_backlog_start_span_s']:.1f} s to start)"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=300, help="tasks per throughput phase")
    parser.add_argument("--rate", type=float, default=20.0, help="steady-state tasks/s")
    parser.add_argument("--steady-seconds", type=float, default=15.0)
    parser.add_argument("--idle-seconds", type=float, default=15.0)
    parser.add_argument("--billing-tasks", type=int, default=100, help="per payload size")
    parser.add_argument("--backlog", type=int, default=2000, help="tenant A's, in fairness")
    parser.add_argument("--delayed-tasks", type=int, default=1000, help="all due at once")
    parser.add_argument("--lanes-backlog", type=int, default=1000, help="default-lane tasks")
    parser.add_argument("--lanes-high", type=int, default=100, help="high-lane tasks")
    parser.add_argument("--lanes-high-rate", type=float, default=20.0, help="their submits/s")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"a subset of {','.join(PHASES)}"
    )
    args = parser.parse_args(argv)
    wanted = set(args.phases.split(","))
    if not wanted <= set(PHASES):
        parser.error(f"--phases: unknown {sorted(wanted - set(PHASES))}")
    small = payload_of(1024)

    started = time.monotonic()
    report: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "args": vars(args)}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"

    def phase(name: str, run: Callable[[], Any]) -> None:
        """Run a phase (once more on a fresh emulator if it fails) and save what is known."""
        try:
            report[name] = run()
        except Exception as exc:  # an emulator that died under load: say so, try once more
            console.print(f"[yellow]{name} failed ({type(exc).__name__}: {exc}); once more")
            report[name] = run()
        out.write_text(json.dumps({**report, "complete": False}, indent=2) + "\n")

    runs: dict[str, Callable[[], Any]] = {
        "floor": lambda: phase_floor(args.tasks, small),
        "throughput": lambda: {str(w): phase_throughput(w, args.tasks, small) for w in (1, 2, 4)},
        "steady": lambda: phase_steady(args.rate, args.steady_seconds, args.idle_seconds, small),
        "billing": lambda: phase_billing(args.billing_tasks, args.rate),
        "fairness": lambda: _fairness(args.backlog),
        "delayed": lambda: phase_delayed(args.delayed_tasks),
        "lanes": lambda: _lanes(args.lanes_backlog, args.lanes_high, args.lanes_high_rate),
        "peers": lambda: phase_peers(args.tasks, small),
    }
    for name in PHASES:
        if name in wanted:
            phase(name, runs[name])
    if "peers" in report:
        Console(width=120).print(peer_table(report["peers"]))  # room for the operations
    if wanted != set(PHASES):
        console.print(f"partial run ({args.phases}) written to {out}")
        return 0
    tp = report["throughput"]
    report["floor_ratio"] = tp["2"]["tasks_per_second"] / report["floor"]["tasks_per_second"]
    report["scaling_4_vs_1"] = tp["4"]["tasks_per_second"] / tp["1"]["tasks_per_second"]
    idle = report["steady"]["idle_requests_per_hour_by_process"]
    workers = {p: n for p, n in idle.items() if p.startswith("worker")}
    report["idle_requests_per_worker_hour"] = sum(workers.values()) / max(1, len(workers))
    # An idle worker only long-polls SQS; the relay's idle cost is reported on its own.
    report["idle_dollars_per_worker_hour"] = (
        report["idle_requests_per_worker_hour"] * PRICE_SQS_FIFO_REQUEST
    )
    report["idle_relay_requests_per_hour"] = idle.get("relay", 0.0)
    report["bench_seconds"] = time.monotonic() - started

    console.print(report_table(report))
    out.write_text(json.dumps({**report, "complete": True}, indent=2) + "\n")
    console.print(f"written to {out} ({report['bench_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
