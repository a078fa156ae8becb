"""`make local`: the whole system on the embedded emulator, a demo load and a summary.

    python -m conveyor_dev.local.run [--duration SECONDS] [--workers N] [--rate TASKS_PER_S]
                                     [--no-supervise]

Without --duration it submits --tasks demo tasks, then keeps the system up (use the CLI with
`source .local/conveyor.env`) until Ctrl-C. With --duration it submits load for most of that
time, drains, and exits. Either way it shuts down cleanly, prints a summary, and exits 1 if any
submitted task was lost or is not terminal.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from conveyor_dev.emulators.backend import start_backend
from conveyor_dev.local.demo import SCHEDULE, TERMINAL, DemoLoad, Summary, summarize
from conveyor_dev.local.meter import MeteringProxy
from conveyor_dev.local.prometheus import Prometheus, prometheus_binary, start_prometheus
from conveyor_dev.local.scrape import total
from conveyor_dev.local.supervise import Supervisor, supervision_enabled
from conveyor_dev.local.system import LocalSystem

TENANT = "demo"
SECOND_TENANT = "demo-b"  # submits a share of the demo load (conveyor_dev.local.demo)
# Waiting for submitted tasks ends when all are terminal, or when none has finished for this long.
DRAIN_STALL_SECONDS = 60.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="conveyor-local", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, help="run for this many seconds, then stop")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--rate", type=float, default=10.0, help="tasks submitted per second")
    parser.add_argument("--tasks", type=int, default=200, help="demo tasks without --duration")
    parser.add_argument("--stack", default="dev", help="Pulumi stack whose resources to create")
    parser.add_argument("--workdir", type=Path, default=Path(".local"))
    parser.add_argument(
        "--no-supervise",
        dest="supervise",
        action="store_false",
        default=supervision_enabled(),
        help="do not restart a component that exits (also: CONVEYOR_LOCAL_SUPERVISE=0)",
    )
    args = parser.parse_args(argv)
    if args.duration is not None and args.duration < 10:
        parser.error("--duration must be at least 10 seconds")
    if args.workers < 1 or args.rate <= 0 or args.tasks < 1:
        parser.error("--workers, --rate and --tasks must be positive")
    return args


# Set in the env file: the run's directory (logs/, pids/), for the runbooks' local blocks.
RUN_DIR_VARIABLE = "CONVEYOR_LOCAL_RUN"


def write_env_file(system: LocalSystem, path: Path) -> None:
    """The CLI's environment for a shell (`source` it): the `conveyor` command on PATH, the
    API and AWS settings, and where this run keeps its logs and pids."""
    lines = [
        f"export {k}={shlex.quote(v)}"
        for k, v in sorted(system.cli_env(TENANT).items())
        if k.startswith(("CONVEYOR_", "AWS_"))
    ]
    lines.append(f"export {RUN_DIR_VARIABLE}={shlex.quote(str(system.workdir))}")
    # The interpreter's directory, unresolved: a venv's bin/ holds `conveyor`.
    lines.append(f'export PATH={shlex.quote(os.path.dirname(sys.executable))}:"$PATH"')
    path.write_text("\n".join(lines) + "\n")


def show_endpoints(
    console: Console,
    system: LocalSystem,
    env_file: Path,
    prometheus: Prometheus | None,
    emulator_url: str,
) -> None:
    table = Table(title="Conveyor is running", show_header=False)
    table.add_row("AWS emulator", f"{system.backend.kind} at {emulator_url}")
    table.add_row("metering proxy (the services' AWS endpoint)", str(system.backend.endpoint_url))
    table.add_row("task API (mTLS)", system.api_address)
    for proc in system.procs.values():
        table.add_row(f"metrics: {proc.name}", proc.metrics_url)
    if prometheus is not None:
        table.add_row("Prometheus (SLO rules loaded)", f"{prometheus.url}/alerts")
        table.add_row("  try", f"{prometheus.url}/graph?g0.expr=slo:sli_error:ratio_rate5m")
    else:
        table.add_row("Prometheus", "not installed: apt-get install prometheus to watch the SLOs")
    table.add_row("logs", str(system.workdir / "logs"))
    table.add_row("CLI", f"source {env_file} && conveyor list --limit 5")
    console.print(table)


# Clients submitting at once: at least 4, more for a higher --rate (a submit takes ~0.1-0.3 s).
MIN_SUBMITTERS = 4
SUBMITS_PER_CLIENT_PER_SECOND = 4


def drive(console: Console, load: DemoLoad, args: argparse.Namespace) -> float:
    """Submit the demo load at --rate from concurrent clients; Ctrl-C ends it early. Returns
    the rate reached (submits answered per second).

    At most one submit per client is outstanding, so when the system cannot keep up the load
    falls behind --rate instead of queueing without bound, and still stops on time."""
    interval = 1.0 / args.rate
    if args.duration is not None:
        load_seconds = args.duration - min(15.0, args.duration / 2)
        target = int(load_seconds * args.rate)
    else:
        load_seconds = float("inf")
        target = args.tasks
    clients = max(MIN_SUBMITTERS, int(args.rate / SUBMITS_PER_CLIENT_PER_SECOND) + 1)
    free = threading.BoundedSemaphore(clients)
    started = time.monotonic()
    sent = 0
    with (
        Progress(
            TextColumn("[bold]submitting demo load"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
        ThreadPoolExecutor(clients, thread_name_prefix="submit") as pool,
    ):
        bar = progress.add_task("submit", total=target)

        def answered(_: object) -> None:
            free.release()
            progress.advance(bar)

        for i in range(target):
            time.sleep(max(0.0, started + i * interval - time.monotonic()))
            if not _acquire_before(free, started + load_seconds):
                progress.update(bar, total=sent)  # the system could not keep up: keep to time
                break
            pool.submit(load.submit_one).add_done_callback(answered)
            sent += 1
    return sent / (time.monotonic() - started)


def _acquire_before(semaphore: threading.BoundedSemaphore, deadline: float) -> bool:
    """Take a free client, unless none frees up before `deadline` (monotonic)."""
    while not semaphore.acquire(timeout=0.1):
        if time.monotonic() > deadline:
            return False
    if time.monotonic() > deadline:
        semaphore.release()
        return False
    return True


def settle(console: Console, load: DemoLoad) -> dict:
    """Until every submitted task is terminal, or none has finished for DRAIN_STALL_SECONDS."""
    with Progress(
        TextColumn("[bold]waiting for tasks to finish"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("settle", total=len(load.submitted))
        finished, progressed = -1, time.monotonic()
        states: dict | None = None
        while True:
            try:
                states = load.states()
            except grpc.RpcError as error:  # an overloaded API sheds load: ask again
                if time.monotonic() - progressed > DRAIN_STALL_SECONDS:
                    if states is None:
                        raise
                    return states
                console.print(f"GetTask answered {error.code().name}; asking again")
                time.sleep(1.0)
                continue
            done = sum(1 for t in states.values() if t.state in TERMINAL)
            progress.update(bar, completed=done)
            if done > finished:
                finished, progressed = done, time.monotonic()
            if done == len(states) or time.monotonic() - progressed > DRAIN_STALL_SECONDS:
                return states
            time.sleep(1.0)


# The API's reads serve GetTask, which this harness polls every second to see tasks settle:
# a cost of watching, not of running tasks, so the per-task figures leave them out.
API_READS = ("GetItem", "Query")


def _polling(label: str) -> bool:
    return label in {f"api {op}" for op in API_READS}


def task_path_requests(system: LocalSystem) -> float:
    """AWS requests of every process (relay and idle polling included), less the API's reads."""
    urls = [p.metrics_url for p in system.procs.values()]
    polling = sum(
        total([system.procs["api"].metrics_url], "conveyor_aws_requests_total", operation=op)
        for op in API_READS
    )
    return total(urls, "conveyor_aws_requests_total") - polling


def show_summary(
    console: Console,
    summary: Summary,
    backend: str,
    submit_rate: tuple[float, float],
    refused: int,
    exit_codes: dict,
    restarts: dict[str, int] | None,
    alerts: dict[str, set[str]] | None,
) -> None:
    table = Table(title="Summary")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("AWS backend", backend)
    table.add_row("submits/s reached (asked)", "{:.1f} ({:.1f})".format(*submit_rate))
    table.add_row("submitted", str(summary.submitted))
    table.add_row("refused at submit (never acknowledged)", str(refused))
    for state in ("SUCCEEDED", "FAILED", "DEAD", "CANCELLED", "EXPIRED"):
        table.add_row(state.lower(), str(summary.by_state.get(state, 0)))
    table.add_row(
        "delayed tasks succeeded (submitted)", f"{summary.delayed_succeeded} ({summary.delayed})"
    )
    table.add_row("tasks with a start_by deadline", str(summary.with_deadline))
    by_state = ", ".join(f"{k.lower()}={v}" for k, v in sorted(summary.scheduled.items()))
    table.add_row(
        f"schedule {SCHEDULE.name} ({SCHEDULE.cron}): tasks fired",
        f"{sum(summary.scheduled.values())} ({by_state})" if by_state else "0 (no slot came yet)",
    )
    table.add_row(
        "submitted by tenant", ", ".join(f"{t}={n}" for t, n in sorted(summary.by_tenant.items()))
    )
    for lane, states in sorted(summary.by_lane.items()):
        table.add_row(
            f"{lane} lane: tasks (succeeded)",
            f"{sum(states.values())} ({states.get('SUCCEEDED', 0)})",
        )
        table.add_row(
            f"{lane} lane: end-to-end p50 (succeeded)",
            f"{summary.lane_p50_seconds.get(lane, 0.0) * 1000:.0f} ms",
        )
    style = "red" if summary.lost else "green"
    table.add_row("lost or not terminal", f"[{style}]{summary.lost}")
    table.add_row("tasks/s (settled)", f"{summary.tasks_per_second:.1f}")
    table.add_row("end-to-end p50 (succeeded)", f"{summary.p50_seconds * 1000:.0f} ms")
    table.add_row("end-to-end p99 (succeeded)", f"{summary.p99_seconds * 1000:.0f} ms")
    table.add_row("AWS requests per task (every process)", f"{summary.aws_requests_per_task:.2f}")
    table.add_row(
        "$ per million tasks (this mix, list prices)", f"${summary.dollars_per_million_tasks:.2f}"
    )
    table.add_row(
        "restarts by the supervisor",
        "off" if restarts is None else ", ".join(f"{k}={v}" for k, v in restarts.items()) or "0",
    )
    table.add_row("process exit codes", ", ".join(f"{k}={v}" for k, v in exit_codes.items()))
    for severity in ("page", "ticket"):
        if alerts is None:
            fired = "not watched (no Prometheus)"
        else:
            fired = ", ".join(sorted(alerts.get(severity, ()))) or "none"
        table.add_row(f"alerts fired: {severity}", fired)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    workdir = args.workdir.resolve() / time.strftime("run-%Y%m%d-%H%M%S")
    with start_backend() as backend:
        console.print(f"[bold]AWS backend:[/] {backend.kind} ({backend.endpoint_url})")
        console.print(f"creating the [bold]{args.stack}[/] stack's queues, table and secrets")
        system = LocalSystem.provision(workdir, backend, (TENANT, SECOND_TENANT), stack=args.stack)
        # The services reach the emulator through the metering proxy, which bills by AWS's rules.
        meter = MeteringProxy(backend.endpoint_url, backend.endpoint_for("dynamodb"))
        system.backend = dataclasses.replace(backend, endpoint_url=meter.url, service_endpoints={})
        exit_codes: dict = {}
        prometheus: Prometheus | None = None
        alerts: dict[str, set[str]] | None = None  # fired during the run, by severity
        supervisor: Supervisor | None = None
        try:
            system.start(workers=args.workers)
            if args.supervise:
                supervisor = Supervisor(system, lambda line: console.print(f"[yellow]{line}"))
                supervisor.start()
            if prometheus_binary():
                prometheus = start_prometheus(system)
                watched_from = time.monotonic()
            env_file = args.workdir.resolve() / "conveyor.env"
            write_env_file(system, env_file)
            show_endpoints(console, system, env_file, prometheus, backend.endpoint_url)
            channel = system.channel(TENANT)
            second = system.channel(SECOND_TENANT)
            load = DemoLoad(system.stub(channel), second=(SECOND_TENANT, system.stub(second)))
            submit_rate = 0.0
            try:
                load.submit_timed()
                load.create_schedule()
                submit_rate = drive(console, load, args)
                if args.duration is None:
                    console.print("demo load submitted; the system keeps running. Ctrl-C stops it.")
                    while True:
                        time.sleep(3600)
            except KeyboardInterrupt:
                console.print("stopping: no new tasks; letting submitted ones finish")
            states = settle(console, load)
            aws_requests = task_path_requests(system)
            created = [t.created_at.ToMilliseconds() for t in states.values()]
            updated = [t.updated_at.ToMilliseconds() for t in states.values()]
            span = (max(updated) - min(created)) / 1000 if states else 0.0
            summary = summarize(states, span, aws_requests, meter.billing.dollars(_polling))
            summary = dataclasses.replace(
                summary, by_tenant=load.by_tenant(TENANT), scheduled=load.scheduled()
            )
            if prometheus is not None:
                alerts = prometheus.fired(time.monotonic() - watched_from)
            channel.close()
            second.close()
        finally:
            if supervisor is not None:
                supervisor.stop()
            if prometheus is not None:
                prometheus.stop()
            exit_codes = system.stop()
            meter.close()
    restarts = None if supervisor is None else dict(supervisor.restarts)
    show_summary(
        console,
        summary,
        backend.kind,
        (submit_rate, args.rate),
        load.rejected,
        exit_codes,
        restarts,
        alerts,
    )
    clean = all(code == 0 for code in exit_codes.values())
    return 0 if summary.lost == 0 and clean and summary.submitted > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
