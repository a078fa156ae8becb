"""The SQS peers of `make bench` (dramatiq + dramatiq_sqs, Celery on kombu's SQS transport), run
as subprocesses of their own virtualenv (`benchmarks/peers/requirements.txt`, built by `make
bench` in .venv/peers), and the per-system summary of the peer phase.

Each peer gets the bench's shape: a producer sending no-op 1 KB tasks from the same client
threads, workers with the same slots (2 processes x 4 threads), through the metering proxy,
which counts their requests by operation. A peer's task appends its enqueue and done times to
a file (benchmarks/peers/done_log.py): the end-to-end latency, and the end of the run.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from conveyor_dev.emulators.backend import EMULATOR_CREDENTIALS
from conveyor_dev.local.meter import MeteringProxy

PEERS_DIR = Path(__file__).with_name("peers")
PEER_VENV = Path(__file__).resolve().parents[1] / ".venv" / "peers"
PEERS = ("dramatiq", "celery")
PROCESSES, THREADS = 2, 4  # the bench's 2 workers x 4 slots


@dataclass(frozen=True)
class Run:
    """One system's measured run in one sequence."""

    tasks: int
    seconds: float
    requests: dict[str, float]  # by operation, during the run
    cpu_seconds: float | None  # the system's own processes; None where not separable
    latencies_ms: list[float]  # enqueue -> done, per task (empty where not recorded)


def by_operation(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """The proxy's request counts ("<caller> <operation>") between two snapshots, by operation."""
    out: Counter[str] = Counter()
    for key, n in after.items():
        if used := n - before.get(key, 0.0):
            out[key.split()[-1]] += used
    return dict(out)


def _percentile(values: list[float], q: int) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def summarize(runs: dict[str, list[Run]], floor: str = "floor") -> dict[str, dict[str, Any]]:
    """Per system: tasks/s min/median/max over the sequences, its ratio to the floor's tasks/s
    in the same sequence (the machine's load drifts between sequences), requests and CPU ms
    per task over all sequences, and end-to-end p50/p99 over all tasks."""
    floor_tps = [r.tasks / r.seconds for r in runs[floor]]
    out: dict[str, dict[str, Any]] = {}
    for system, seq in runs.items():
        tps = [r.tasks / r.seconds for r in seq]
        tasks = sum(r.tasks for r in seq)
        ops: Counter[str] = Counter()
        for r in seq:
            ops.update(r.requests)
        cpu = [r.cpu_seconds for r in seq]
        latencies = [ms for r in seq for ms in r.latencies_ms]
        out[system] = {
            "tasks_per_second": {
                "min": min(tps),
                "median": statistics.median(tps),
                "max": max(tps),
                "by_sequence": tps,
            },
            "ratio_to_floor": [t / f for t, f in zip(tps, floor_tps, strict=True)],
            "requests_per_task": sum(ops.values()) / tasks,
            "requests_per_task_by_operation": {k: v / tasks for k, v in sorted(ops.items())},
            "cpu_ms_per_task": (
                None if None in cpu else sum(c for c in cpu if c is not None) * 1000 / tasks
            ),
            "end_to_end_ms": {"p50": _percentile(latencies, 50), "p99": _percentile(latencies, 99)},
        }
    return out


# ---- running a peer ----
def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its live descendants, from /proc/<pid>/stat."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu seconds)
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The fields after the command name (which may hold spaces) start at the state, #3.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    tree, grew = {pid}, True
    while grew:
        kids = {p for p, (parent, _) in stats.items() if parent in tree} - tree
        tree |= kids
        grew = bool(kids)
    return sum(stats[p][1] for p in tree if p in stats)


def _worker_commands(peer: str) -> list[list[str]]:
    bin_ = PEER_VENV / "bin"
    if peer == "dramatiq":
        slots = ["--processes", str(PROCESSES), "--threads", str(THREADS)]
        return [[str(bin_ / "dramatiq"), "dramatiq_app", *slots]]
    # SQS has no broadcast, so none of the workers' gossip, mingle or heartbeat.
    quiet = ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"]
    return [
        [
            str(bin_ / "celery"),
            "-A",
            "celery_app",
            "worker",
            "-P",
            "threads",
            "-c",
            str(THREADS),
            "-n",
            f"w{i}@%h",
            *quiet,
        ]
        for i in range(PROCESSES)
    ]


def _peer_env(proxy: MeteringProxy, region: str, done_file: Path) -> dict[str, str]:
    sqs = boto3.client(
        "sqs",
        endpoint_url=proxy.url,
        region_name=region,
        aws_access_key_id=EMULATOR_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=EMULATOR_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    # Celery's queue, at the proxy's address (see benchmarks/peers/celery_app.py).
    queue_url = sqs.create_queue(QueueName="bench-celery")["QueueUrl"]
    path = "/" + queue_url.split("://", 1)[1].split("/", 1)[1]
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(PEERS_DIR),
        "AWS_DEFAULT_REGION": region,
        **EMULATOR_CREDENTIALS,
        "PEER_ENDPOINT": proxy.url,
        "PEER_QUEUE_URL": proxy.url + path,
        "PEER_DONE_FILE": str(done_file),
    }


def _done(done_file: Path) -> list[tuple[float, float, int]]:
    if not done_file.exists():
        return []
    lines = done_file.read_text().splitlines()
    return [(float(a), float(b), int(p)) for a, b, p in (line.split() for line in lines)]


def _wait_done(done_file: Path, count: int, timeout: float) -> list[tuple[float, float, int]]:
    deadline = time.monotonic() + timeout
    while len(rows := _done(done_file)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(rows)} of {count} peer tasks done within {timeout}s")
        time.sleep(0.05)
    return rows


@contextmanager
def _started(commands: list[list[str]], env: dict[str, str], log: Path) -> Iterator[list[Any]]:
    with log.open("ab") as out:
        procs = [
            subprocess.Popen(
                cmd,
                env=env,
                cwd=PEERS_DIR,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
            for cmd in commands
        ]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def run_peer(
    peer: str, proxy: MeteringProxy, region: str, tasks: int, clients: int, logs: Path
) -> Run:
    """`tasks` no-op tasks through `peer`, once both its worker processes have run a task."""
    if not (PEER_VENV / "bin" / "python").exists():
        raise RuntimeError(f"no peer virtualenv at {PEER_VENV}: `make bench` builds it")
    logs.mkdir(parents=True, exist_ok=True)
    done_file = logs / f"{peer}-done.txt"
    done_file.unlink(missing_ok=True)
    env = _peer_env(proxy, region, done_file)
    producer_cmd = [str(PEER_VENV / "bin" / "python"), "producer.py", peer, str(clients)]
    log = logs / f"{peer}.log"
    with _started(_worker_commands(peer), env, log) as workers:
        producer = subprocess.Popen(
            producer_cmd,
            env=env,
            cwd=PEERS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert producer.stdin and producer.stdout

        def send(n: int) -> None:
            assert producer.stdin and producer.stdout
            producer.stdin.write(f"{n}\n")
            producer.stdin.flush()
            if producer.stdout.readline().strip() != "sent":
                raise RuntimeError(f"{peer}'s producer failed (its log: {log})")

        try:
            if producer.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{peer}'s producer did not start")
            # Warm up until each worker process has run a task: start-up is not throughput.
            warm, deadline = 0, time.monotonic() + 120
            while len({pid for *_, pid in _done(done_file)}) < PROCESSES:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{peer}'s workers did not all start (log: {log})")
                send(2 * PROCESSES * THREADS)
                warm += 2 * PROCESSES * THREADS
                _wait_done(done_file, warm, timeout=120)
            requests_before = proxy.billing.snapshot()["requests"]
            pids = [producer.pid] + [w.pid for w in workers]
            cpu_before = sum(tree_cpu_seconds(p) for p in pids)
            started = time.time()
            send(tasks)
            rows = _wait_done(done_file, warm + tasks, timeout=300)[warm:]
            ended = max(done for _, done, _ in rows)
            cpu = sum(tree_cpu_seconds(p) for p in pids) - cpu_before
            requests = by_operation(proxy.billing.snapshot()["requests"], requests_before)
        finally:
            producer.stdin.close()
            producer.wait(timeout=30)
    return Run(
        tasks=tasks,
        seconds=ended - started,
        requests=requests,
        cpu_seconds=cpu,
        latencies_ms=[(done - enqueued) * 1000 for enqueued, done, _ in rows],
    )
