"""`make bench`: throughput, latency and AWS cost per task of the local system, in one run.

Figures from one machine are only comparable within one run (the machine is noisy), so the
benchmark reports ratios measured side by side: end-to-end throughput with one worker versus
two. Results are printed and written to benchmarks/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conveyor.local.backend import start_backend
from conveyor.local.scrape import total
from conveyor.local.system import LocalSystem
from conveyor.v1 import task_service_pb2 as pb
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).with_name("results")
console = Console()


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def submit_latency(system: LocalSystem, count: int) -> dict[str, float]:
    """Sequential SubmitTask round trips (commit + send + mark), in milliseconds."""
    with system.channel("bench") as channel:
        stub = system.stub(channel)
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            stub.SubmitTask(
                pb.SubmitTaskRequest(
                    task_type="demo.sleep",
                    payload=b'{"seconds": 0}',
                    idempotency_key=uuid.uuid4().hex,
                ),
                timeout=10,
            )
            samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": percentile(samples, 50), "p99_ms": percentile(samples, 99)}


def drain_throughput(system: LocalSystem, tasks: int) -> dict[str, float]:
    """Submit `tasks` no-op tasks from 4 clients, then time until all have succeeded.

    AWS requests are counted from the services' own counters: the API's while submitting
    (before the benchmark starts polling GetTask through it) and the workers' until the end.
    """
    api = [system.procs["api"].metrics_url]
    workers = [p.metrics_url for n, p in system.procs.items() if n.startswith("worker")]
    api_before = total(api, "conveyor_aws_requests_total")
    workers_before = total(workers, "conveyor_aws_requests_total")
    with system.channel("bench") as channel:
        stub = system.stub(channel)
        started = time.perf_counter()

        def one(_: int) -> str:
            return stub.SubmitTask(
                pb.SubmitTaskRequest(
                    task_type="demo.sleep",
                    payload=b'{"seconds": 0}',
                    idempotency_key=uuid.uuid4().hex,
                ),
                timeout=30,
            ).task.task_id

        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(one, range(tasks)))
        api_requests = total(api, "conveyor_aws_requests_total") - api_before
        pending = set(ids)
        while pending:
            for task_id in list(pending):
                task = stub.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10).task
                if task.state == pb.TASK_STATE_SUCCEEDED:
                    pending.discard(task_id)
            if pending:
                time.sleep(0.2)
        elapsed = time.perf_counter() - started
    worker_requests = total(workers, "conveyor_aws_requests_total") - workers_before
    return {
        "tasks": tasks,
        "seconds": elapsed,
        "tasks_per_second": tasks / elapsed,
        "api_aws_requests_per_task": api_requests / tasks,
        "worker_aws_requests_per_task": worker_requests / tasks,
    }


def run_system(workers: int, tasks: int, latency_samples: int) -> dict[str, object]:
    with start_backend() as backend, tempfile.TemporaryDirectory() as tmp:
        system = LocalSystem.provision(Path(tmp), backend, ("bench",))
        try:
            system.start(workers=workers)
            console.print(f"[bold]{workers} worker(s):[/] submit latency, then {tasks} tasks")
            result: dict[str, object] = {"workers": workers}
            if latency_samples:
                result["submit"] = submit_latency(system, latency_samples)
            result["drain"] = drain_throughput(system, tasks)
            return result
        finally:
            system.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--latency-samples", type=int, default=100)
    args = parser.parse_args(argv)

    one = run_system(1, args.tasks, args.latency_samples)
    two = run_system(2, args.tasks, 0)

    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "one_worker": one,
        "two_workers": two,
        "throughput_ratio_two_vs_one": two["drain"]["tasks_per_second"]  # type: ignore[index]
        / one["drain"]["tasks_per_second"],  # type: ignore[index]
    }
    table = Table(title="Conveyor benchmark (one run, one machine: compare ratios)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(
        "submit p50 / p99 (1 worker)", "{p50_ms:.1f} / {p99_ms:.1f} ms".format(**one["submit"])
    )  # type: ignore[arg-type]
    for label, result in (("1 worker", one), ("2 workers", two)):
        drain = result["drain"]
        table.add_row(f"tasks/s, {label}", f"{drain['tasks_per_second']:.1f}")  # type: ignore[index]
        table.add_row(
            f"AWS requests per task, {label}: api + workers (incl. empty polls)",
            f"{drain['api_aws_requests_per_task']:.1f} + "  # type: ignore[index]
            f"{drain['worker_aws_requests_per_task']:.1f}",  # type: ignore[index]
        )
    table.add_row("throughput ratio 2 workers / 1", f"{report['throughput_ratio_two_vs_one']:.2f}")
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
