"""`make soak`: many tasks through a system whose processes keep dying, with AWS fault windows.

    python -m conveyor_dev.local.soak [--tasks 1000] [--workers 3] [--seed N] [--timeout SECONDS]

A random API, relay or worker process is SIGKILLed every 1 to 3 seconds and started again, as
ECS would restart it, while fault windows (conveyor_dev.inject.faults, opened and closed from
here through `while=` files) throttle, fail, slow down or cut off DynamoDB and SQS for a few
seconds at a time. The client retries every refused submit with its idempotency key. Then the
chaos stops and the backlog drains.

A recurring schedule (conveyor_dev.local.schedule_oracle: every 3 s, croniter's seconds field)
is created before the chaos, kept through a calm stretch after it (every slot there must fire
exactly once) and then deleted; its tasks run the oracle's handler too.

The verdict comes from outside the system: the client's own record of what it submitted and
when, the tenant's task listing, and the outside oracle's sink (conveyor_dev.local.oracle) for
executions and effects. It reports lost tasks (submitted and acknowledged, then missing), phantom
tasks (in the listing but never submitted, or a second task for one key), stuck tasks (not
terminal once the drain is over), duplicate effects, effects missing from succeeded tasks,
duplicate executions, the longest time from the client's first submit to the effect, and the
schedule's slots: fired once, doubled, run before their slot, missed beyond the catch-up
policy (or missed at all in the calm stretch). It exits 1 on any lost, phantom or stuck task,
any duplicate or missing effect, or any doubled, early, missed or unexpected schedule firing;
it stops by itself after --timeout seconds at most.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from conveyor_dev.emulators.backend import start_backend
from conveyor_dev.local import oracle, schedule_oracle
from conveyor_dev.local.demo import TERMINAL
from conveyor_dev.local.system import LocalSystem

TENANT = "soak"
SUBMITTERS = 6
DRAIN_SECONDS = 180.0
# Short leases so a killed worker's tasks come back within seconds.
TUNING = {
    "CONVEYOR_VISIBILITY_TIMEOUT_SECONDS": "6",
    "CONVEYOR_LEASE_SECONDS": "6",
    "CONVEYOR_HEARTBEAT_INTERVAL_SECONDS": "1",
    "CONVEYOR_OUTBOX_AGE_SECONDS": "2",
    "CONVEYOR_RELAY_INTERVAL_SECONDS": "1",
    "CONVEYOR_LOG_LEVEL": "WARNING",
}
# Fault windows: name -> rule, each live only while its file exists.
WINDOWS = {
    "dynamodb-throttled": "dynamodb.*=throttle p=0.5",
    "dynamodb-5xx": "dynamodb.*=error p=0.3",
    "dynamodb-slow": "dynamodb.*=hang seconds=0.5 p=0.5",
    "dynamodb-lost-responses": "dynamodb.*=lost p=0.3",
    # Transactions (submit, effects) and the transitions' updates both meet items held by one.
    "dynamodb-conflicts": (
        "dynamodb.TransactWriteItems=conflict p=0.3; dynamodb.UpdateItem=conflict p=0.3"
    ),
    "dynamodb-resets": "dynamodb.*=reset p=0.3",
    "sqs-down": "sqs.*=down",
    "sqs-throttled": "sqs.*=throttle p=0.5",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="conveyor-soak", description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks to submit (default 1000)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="stop after this long")
    parser.add_argument("--workdir", type=Path, default=Path(".local/soak"))
    parser.add_argument(
        "--report", type=Path, help="write the report here as JSON (default: WORKDIR/report.json)"
    )
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.workers < 1 or args.timeout < 60:
        parser.error("--tasks and --workers must be positive, --timeout at least 60")
    return args


@dataclass
class Submission:
    key: str
    payload: dict[str, float]
    max_attempts: int
    first_sent_at: float = 0.0
    task_id: str = ""  # empty until the API acknowledged it
    delay_seconds: float = 0.0  # a delayed task: not_before this long after its first send


@dataclass
class Report:
    tasks: int
    acknowledged: int
    seed: int
    kills: dict[str, int]
    fault_windows: dict[str, int]
    by_state: dict[str, int]
    lost: list[str]
    phantom: list[str]
    stuck: list[str]
    duplicate_effects: dict[str, str]
    missing_effects: list[str]
    duplicate_executions: int
    most_executions: int
    longest_end_to_end_seconds: float
    seconds: float
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    delayed: int = 0
    schedule: schedule_oracle.ScheduleReport = field(default_factory=schedule_oracle.ScheduleReport)

    @property
    def failed(self) -> bool:
        return bool(
            self.lost
            or self.phantom
            or self.stuck
            or self.duplicate_effects
            or self.missing_effects
            or self.acknowledged < self.tasks
            or self.schedule.failed
        )


# The share of tasks submitted delayed (not_before 1-6 s ahead): sent by the relay, which the
# chaos kills too.
DELAYED_SHARE = 0.15


def make_submissions(count: int, rng: random.Random) -> list[Submission]:
    """Mostly short tasks; some apply their effect first, some fail once and are retried."""
    out = []
    for _ in range(count):
        payload: dict[str, float] = {"seconds": round(rng.uniform(0.05, 0.5), 2)}
        if rng.random() < 0.2:
            payload["effect_first"] = 1
        if rng.random() < 0.1:
            payload["fail_executions"] = 1
        delay = round(rng.uniform(1, 6), 1) if rng.random() < DELAYED_SHARE else 0.0
        out.append(Submission(uuid.uuid4().hex, payload, 5, delay_seconds=delay))
    return out


class Chaos:
    """Kills a random service process every 1-3 s and restarts it at once; opens a fault
    window for 2-5 s every 3-8 s. Driven by `tick()` from the main thread: a child dies with
    the thread that started it (conveyor_dev.local.lifetime), so only the main thread may."""

    def __init__(self, system: LocalSystem, flags: Path, rng: random.Random) -> None:
        self.system = system
        self.flags = flags
        self.rng = rng
        self.kills: dict[str, int] = {}
        self.windows: dict[str, int] = {}
        self.relay_kills: list[float] = []  # wall times, for the schedule's verdict
        self.window_spans: list[tuple[str, float, float]] = []  # (name, opened, closed), wall
        self._opened_at = 0.0
        self.open_window = ""
        now = time.monotonic()
        self._next_kill = now + rng.uniform(1.0, 3.0)
        self._next_window = now + rng.uniform(3.0, 8.0)

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_kill:
            self._kill_one()
            self._next_kill = now + self.rng.uniform(1.0, 3.0)
        if self.open_window and now >= self._next_window:
            self._close_window()
            self._next_window = now + self.rng.uniform(3.0, 8.0)
        elif not self.open_window and now >= self._next_window:
            self.open_window = self.rng.choice(sorted(WINDOWS))
            self.windows[self.open_window] = self.windows.get(self.open_window, 0) + 1
            (self.flags / self.open_window).touch()
            self._opened_at = time.time()
            self._next_window = now + self.rng.uniform(2.0, 5.0)

    def finish(self) -> None:
        """Chaos over: close the fault window, restart anything down, wait until all serve."""
        if self.open_window:
            self._close_window()
        for name, proc in list(self.system.procs.items()):
            if proc.popen.poll() is not None:
                self.system.respawn(name)
        self.system.wait_ready()

    def _kill_one(self) -> None:
        name = self.rng.choice(sorted(self.system.procs))
        proc = self.system.procs[name]
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait()
            self.kills[name] = self.kills.get(name, 0) + 1
            if name == "relay":
                self.relay_kills.append(time.time())
        self.system.respawn(name)

    def _close_window(self) -> None:
        (self.flags / self.open_window).unlink()
        self.window_spans.append((self.open_window, self._opened_at, time.time()))
        self.open_window = ""


class TerminalCounter(threading.Thread):
    """Counts the tenant's terminal tasks every 2 s, off the main thread (which runs the chaos)."""

    def __init__(self, stub: pb_grpc.TaskServiceStub) -> None:
        super().__init__(daemon=True)
        self.stub = stub
        self.count = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            tasks = list_tenant(self.stub, time.monotonic() + 5)
            if tasks is not None:
                self.count = sum(t.state in TERMINAL for t in submitted(tasks))
            self.halt.wait(2.0)


def fault_spec(flags: Path) -> str:
    return "; ".join(
        f"{rule.strip()} while={flags / name}"
        for name, rules in WINDOWS.items()
        for rule in rules.split(";")
    )


def submit_until_acknowledged(
    stub: pb_grpc.TaskServiceStub, item: Submission, deadline: float
) -> None:
    """As a careful client does: retry with the same key until the API answers."""
    item.first_sent_at = time.time()
    not_before = None
    if item.delay_seconds:  # one absolute time for every retry: the same request
        not_before = Timestamp()
        not_before.FromMilliseconds(int((item.first_sent_at + item.delay_seconds) * 1000))
    request = pb.SubmitTaskRequest(
        task_type=oracle.TASK_TYPE,
        payload=json.dumps(item.payload).encode(),
        idempotency_key=item.key,
        max_attempts=item.max_attempts,
        not_before=not_before,
    )
    delay = 0.2
    while time.monotonic() < deadline:
        try:
            item.task_id = stub.SubmitTask(request, timeout=5).task.task_id
            return
        except grpc.RpcError:
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def list_tenant(stub: pb_grpc.TaskServiceStub, deadline: float) -> list[pb.Task] | None:
    """Every task of the tenant, or None if the API did not answer in time."""
    while time.monotonic() < deadline:
        try:
            return list(stub.ListTasks(pb.ListTasksRequest(page_size=100), timeout=30))
        except grpc.RpcError:
            time.sleep(0.5)
    return None


def run(args: argparse.Namespace, console: Console) -> Report:
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    started = time.monotonic()
    deadline = started + args.timeout
    workdir = args.workdir.resolve() / time.strftime("soak-%Y%m%d-%H%M%S")
    flags = workdir / "faults"
    flags.mkdir(parents=True)
    sink = workdir / "oracle-sink.jsonl"
    tuning = {**TUNING, **oracle.worker_env(sink), "CONVEYOR_AWS_FAULTS": fault_spec(flags)}
    submissions = make_submissions(args.tasks, rng)
    with start_backend() as backend:
        console.print(f"[bold]soak:[/] {args.tasks} tasks, seed {seed}, {backend.kind} backend")
        system = LocalSystem.provision(workdir, backend, (TENANT,), tuning=tuning)
        try:
            system.start(workers=args.workers)
            with system.channel(TENANT) as channel:
                stub = system.stub(channel)
                created_at = schedule_oracle.create(stub, time.monotonic() + 60)
                chaos = Chaos(system, flags, rng)
                drive(console, stub, submissions, chaos, deadline - DRAIN_SECONDS)
                chaos.finish()
                calm_from = calm(console)
                deleted_at = schedule_oracle.delete(stub, time.monotonic() + 60)
                listed = drain(console, stub, submissions, deadline)
        finally:
            exit_codes = system.stop()
    seen = oracle.read(sink)
    report = verdict(submissions, listed, seen, chaos, seed)
    report.schedule = schedule_oracle.judge(
        seen,
        created_at,
        calm_from,
        deleted_at,
        chaos.relay_kills,
        [(a, b) for name, a, b in chaos.window_spans if name.startswith("dynamodb")],
    )
    report.seconds = round(time.monotonic() - started, 1)
    report.exit_codes = exit_codes
    return report


def drive(
    console: Console,
    stub: pb_grpc.TaskServiceStub,
    submissions: list[Submission],
    chaos: Chaos,
    until: float,
) -> None:
    """Submit everything under chaos, and keep the chaos on until every task is terminal."""
    counter = TerminalCounter(stub)
    counter.start()
    with (
        _progress(console, "under chaos") as progress,
        ThreadPoolExecutor(SUBMITTERS, thread_name_prefix="submit") as pool,
    ):
        sent = progress.add_task("acknowledged", total=len(submissions))
        done = progress.add_task("terminal", total=len(submissions))
        for item in submissions:
            future = pool.submit(submit_until_acknowledged, stub, item, until)
            future.add_done_callback(lambda _: progress.advance(sent))
        while time.monotonic() < until and counter.count < len(submissions):
            chaos.tick()
            progress.update(done, completed=counter.count)
            progress.update(sent, description=_chaos_line(chaos))
            time.sleep(0.1)
        counter.halt.set()


def calm(console: Console) -> float:
    """Chaos over: keep the schedule through CALM_SECONDS in which nothing is killed and no
    fault window opens (every slot in it must fire once); returns when the stretch began."""
    began = time.time()
    with _progress(console, "calm (schedule kept)") as progress:
        bar = progress.add_task("seconds", total=schedule_oracle.CALM_SECONDS)
        while (elapsed := time.time() - began) < schedule_oracle.CALM_SECONDS:
            progress.update(bar, completed=elapsed)
            time.sleep(0.5)
    return began


def drain(
    console: Console, stub: pb_grpc.TaskServiceStub, submissions: list[Submission], deadline: float
) -> list[pb.Task] | None:
    """Chaos over: wait (bounded) for the backlog to finish, then list the tenant's tasks."""
    with _progress(console, "draining") as progress:
        done = progress.add_task("terminal", total=len(submissions))
        while True:
            terminal = _terminal_count(stub)
            progress.update(done, completed=terminal)
            if terminal >= len(submissions) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
    return list_tenant(stub, time.monotonic() + 60)


def submitted(tasks: list[pb.Task]) -> list[pb.Task]:
    """The tasks the soak's client submitted: not its schedule's."""
    return [t for t in tasks if not schedule_oracle.is_schedule_key(t.idempotency_key)]


def _terminal_count(stub: pb_grpc.TaskServiceStub) -> int:
    """The submitted tasks that are terminal, counted only once every schedule task is too
    (the schedule's last tasks drain with the rest)."""
    tasks = list_tenant(stub, time.monotonic() + 5) or []
    scheduled = [t for t in tasks if schedule_oracle.is_schedule_key(t.idempotency_key)]
    if any(t.state not in TERMINAL for t in scheduled):
        return 0
    return sum(t.state in TERMINAL for t in submitted(tasks))


def _chaos_line(chaos: Chaos) -> str:
    window = f", fault: {chaos.open_window}" if chaos.open_window else ""
    return f"acknowledged ({sum(chaos.kills.values())} kills{window})"


def _progress(console: Console, title: str) -> Progress:
    return Progress(
        TextColumn(f"[bold]{title}[/] {{task.description}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def verdict(
    submissions: list[Submission],
    listed: list[pb.Task] | None,
    seen: oracle.Observed,
    chaos: Chaos,
    seed: int,
) -> Report:
    by_key: dict[str, list[pb.Task]] = {}
    for task in submitted(listed or []):
        by_key.setdefault(task.idempotency_key, []).append(task)
    ours = {s.key: s for s in submissions}
    acknowledged = [s for s in submissions if s.task_id]
    lost = [
        s.task_id
        for s in acknowledged
        if s.task_id not in {t.task_id for t in by_key.get(s.key, [])}
    ]
    phantom = [t.task_id for k, ts in by_key.items() for t in (ts if k not in ours else ts[1:])]
    tasks = [by_key[s.key][0] for s in acknowledged if by_key.get(s.key)]
    scheduled = [t for t in listed or [] if schedule_oracle.is_schedule_key(t.idempotency_key)]
    stuck = [t.task_id for t in [*tasks, *scheduled] if t.state not in TERMINAL]
    succeeded = [t for t in tasks if t.state == pb.TASK_STATE_SUCCEEDED]
    missing = [
        t.task_id
        for t in [*succeeded, *scheduled]
        if t.state == pb.TASK_STATE_SUCCEEDED and seen.applied(t.task_id) == 0
    ]
    cancelled_with_effect = [
        t.task_id for t in tasks if t.state == pb.TASK_STATE_CANCELLED and seen.applied(t.task_id)
    ]
    ids = {t.task_id for t in [*tasks, *scheduled]}  # a schedule's effects count too
    duplicates = {t: why for t, why in seen.duplicate_effects().items() if t in ids}
    executions = [seen.executions[t.task_id] for t in tasks]
    first_sent = {
        by_key[s.key][0].task_id: s.first_sent_at for s in acknowledged if by_key.get(s.key)
    }
    end_to_end = [
        seen.first_effect_at[t.task_id] - first_sent[t.task_id]
        for t in succeeded
        if t.task_id in seen.first_effect_at
    ]
    by_state: dict[str, int] = {}
    for task in tasks:
        name = pb.TaskState.Name(task.state).removeprefix("TASK_STATE_")
        by_state[name] = by_state.get(name, 0) + 1
    return Report(
        tasks=len(submissions),
        acknowledged=len(acknowledged),
        seed=seed,
        kills=dict(sorted(chaos.kills.items())),
        fault_windows=dict(sorted(chaos.windows.items())),
        by_state=by_state,
        lost=lost if listed is not None else [s.task_id for s in acknowledged],
        phantom=phantom,
        stuck=stuck,
        duplicate_effects=duplicates,
        missing_effects=missing + cancelled_with_effect,
        duplicate_executions=sum(n > 1 for n in executions),
        most_executions=max(executions, default=0),
        longest_end_to_end_seconds=round(max(end_to_end, default=0.0), 2),
        seconds=0.0,
        delayed=sum(1 for s in submissions if s.delay_seconds),
    )


def show(console: Console, report: Report) -> None:
    table = Table(title="Soak report")
    table.add_column("measure")
    table.add_column("value", justify="right")

    def bad(items: list[str] | dict[str, str]) -> str:
        return f"[{'red' if items else 'green'}]{len(items)}"

    table.add_row("tasks submitted / acknowledged", f"{report.tasks} / {report.acknowledged}")
    table.add_row("of them delayed (sent by the relay when due)", str(report.delayed))
    table.add_row(
        "ended", ", ".join(f"{k.lower()} {v}" for k, v in sorted(report.by_state.items()))
    )
    table.add_row("processes SIGKILLed", f"{sum(report.kills.values())} ({report.kills})")
    table.add_row("fault windows", f"{sum(report.fault_windows.values())} ({report.fault_windows})")
    table.add_row("lost", bad(report.lost))
    table.add_row("phantom", bad(report.phantom))
    table.add_row("stuck", bad(report.stuck))
    table.add_row("duplicate effects", bad(report.duplicate_effects))
    table.add_row("missing effects", bad(report.missing_effects))
    table.add_row(
        "duplicate executions",
        f"{report.duplicate_executions} tasks (at most {report.most_executions} runs of one)",
    )
    table.add_row("longest submit-to-effect", f"{report.longest_end_to_end_seconds:.1f} s")
    s = report.schedule
    table.add_row(
        f"schedule {schedule_oracle.CRON!r}: slots fired once",
        f"{s.fired_once} of {s.slots} (+{s.late_slots_fired} in the delete's last period)",
    )
    table.add_row(
        "schedule: calm slots fired once", f"{s.calm_fired_once} of {s.calm_slots} (all needed)"
    )
    table.add_row("schedule: tasks run before their slot", bad(["x"] * s.early))
    table.add_row("schedule: doubled slots", bad(["x"] * s.doubled))
    table.add_row("schedule: missed slots (beyond catch-up)", bad(["x"] * s.missed))
    table.add_row("schedule: unexpected firings", bad(["x"] * s.unexpected))
    table.add_row(
        "schedule: skipped by catch-up",
        f"{s.skipped_by_policy} (relay SIGKILLed {s.relay_kills} times, or DynamoDB faults)",
    )
    table.add_row("seed, duration", f"{report.seed}, {report.seconds:.0f} s")
    table.add_row(
        "exit codes at the end", ", ".join(f"{k}={v}" for k, v in report.exit_codes.items())
    )
    console.print(table)
    for name in ("lost", "phantom", "stuck", "duplicate_effects", "missing_effects"):
        if getattr(report, name):
            console.print(f"[red]{name}:[/] {getattr(report, name)}")
    if report.schedule.failed:
        console.print(f"[red]schedule:[/] {report.schedule}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    report = run(args, console)
    show(console, report)
    path = args.report or args.workdir / "report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**asdict(report), "failed": report.failed}, indent=2) + "\n")
    console.print(f"report written to {path}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
