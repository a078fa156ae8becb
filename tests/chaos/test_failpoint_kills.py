"""A real SIGKILL at every failpoint (conveyor.failpoints), then the process restarted as ECS
would restart it: the task still reaches the right end, with the right attempts and history,
and the outside oracle's sink shows how often it ran and that its effect happened once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import pytest
from chaos_support import Oracle
from conveyor.queue import dead_letter_group
from conveyor.v1 import task_service_pb2 as pb
from conveyor_dev.local import oracle
from conveyor_dev.local.system import LocalSystem
from google.protobuf.timestamp_pb2 import Timestamp
from support import get, path_of, submit, wait_for, wait_terminal

pytestmark = pytest.mark.chaos

OK = ["PENDING", "QUEUED", "RUNNING", "SUCCEEDED"]
RETRIED = ["PENDING", "QUEUED", "RUNNING", "RUNNING", "SUCCEEDED"]
DEAD = ["PENDING", "QUEUED", "RUNNING", "DEAD"]
REDRIVEN = [*DEAD, "PENDING", "QUEUED", "RUNNING", "SUCCEEDED"]


@dataclass(frozen=True)
class Case:
    point: str
    state: str
    attempts: int
    executions: int
    path: list[str]
    payload: dict = field(default_factory=lambda: {"seconds": 0.2})
    max_attempts: int = 0
    role: str = ""  # the process killed there: the failpoint's prefix, unless it runs in two
    delay_seconds: float = 0  # a delayed task (not_before this far ahead), sent by the relay

    @property
    def id(self) -> str:
        return f"{self.process}:{self.point}" + (":delayed" if self.delay_seconds else "")

    @property
    def process(self) -> str:
        return self.role or self.point.split(".")[0]


CASES = [
    Case("api.before_commit", "SUCCEEDED", 1, 1, OK),
    Case("api.after_commit", "SUCCEEDED", 1, 1, OK),
    Case("api.after_send", "SUCCEEDED", 1, 1, OK),
    Case("worker.after_receive", "SUCCEEDED", 1, 1, OK),
    Case("worker.after_claim", "SUCCEEDED", 2, 1, RETRIED),
    Case("worker.mid_handler", "SUCCEEDED", 2, 2, RETRIED),
    Case("worker.after_effect", "SUCCEEDED", 2, 2, RETRIED),
    Case("worker.after_complete", "SUCCEEDED", 1, 1, OK),
    Case("dead_letter.after_dead", "DEAD", 1, 1, DEAD, {"fail_executions": 1}, 1, "worker"),
    Case("enqueue.after_send", "SUCCEEDED", 1, 1, OK, role="relay"),
    Case("enqueue.after_send", "SUCCEEDED", 1, 1, OK, role="relay", delay_seconds=1),
    Case("dead_letter.after_dead", "DEAD", 0, 0, ["PENDING", "QUEUED", "DEAD"], role="relay"),
    Case("redrive.after_pending", "SUCCEEDED", 1, 2, REDRIVEN, {"fail_executions": 1}, 1),
    Case("redrive.after_send", "SUCCEEDED", 1, 2, REDRIVEN, {"fail_executions": 1}, 1),
]
KILL = signal.SIGKILL


def armed(point: str) -> dict[str, str]:
    return {"CONVEYOR_FAILPOINTS": f"{point}=kill"}


def died_at_failpoint(system: LocalSystem, name: str) -> None:
    proc = system.procs[name]
    assert proc.popen.wait(60) == -KILL, f"{name} was not killed at its failpoint"
    # As ECS restarts it: the same service, with the failpoint disarmed.
    system.respawn(name, {k: v for k, v in proc.extra.items() if k != "CONVEYOR_FAILPOINTS"})
    system.wait_ready()


def redrive(system: LocalSystem, task_id: str, extra: dict[str, str]) -> subprocess.Popen:
    env = {**system.cli_env("acme"), **extra}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor_dev.inject.launch",
            "conveyor.cli",
            "dlq",
            "redrive",
            "--task-id",
            task_id,
            "--yes",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def dlq_groups(system: LocalSystem) -> list[str] | None:
    """The message groups of everything in the DLQ, or None while some message is still
    hidden (a process that died while looking at the DLQ leaves its messages hidden until
    their visibility timeout: late, never lost)."""
    sqs = system.backend.client("sqs")
    counts = sqs.get_queue_attributes(
        QueueUrl=system.dlq_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    if int(counts["ApproximateNumberOfMessagesNotVisible"]):
        return None
    got = sqs.receive_message(
        QueueUrl=system.dlq_url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=1,
        MessageSystemAttributeNames=["MessageGroupId"],
    ).get("Messages", [])
    groups = sorted(m["Attributes"]["MessageGroupId"] for m in got)
    return groups if len(groups) == int(counts["ApproximateNumberOfMessages"]) else None


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_killed_at_a_failpoint_the_restarted_system_finishes_the_task(
    with_oracle: Oracle, case: Case, report: Callable[[str], None]
):
    system = with_oracle.system
    role = case.process
    api = armed(case.point) if role == "api" else {}
    if case.point == "enqueue.after_send":  # the API's send fails: the relay is the one to send
        api = {"CONVEYOR_AWS_FAULTS": "sqs.SendMessage=down"}
    system.spawn("api", "api", api)
    # A relay killed mid-scan leaves the DLQ messages it held hidden for the scan's hold
    # (30 s at this scan limit; 100 s at the default 10,000): late, never lost.
    relay = {"CONVEYOR_DLQ_SCAN_LIMIT": "1000"}
    system.spawn("relay", "relay", {**relay, **armed(case.point)} if role == "relay" else relay)
    if role != "relay" or case.point == "enqueue.after_send":  # compensation: a worker later
        system.spawn("worker-1", "worker", armed(case.point) if role == "worker" else {})
    system.wait_ready()
    key = f"fp-{uuid.uuid4().hex[:12]}"
    with system.channel("acme") as channel:
        stub = system.stub(channel)
        task_id = DRIVERS[role](system, stub, case, key)
        task = wait_terminal(stub, task_id, timeout=90)
        history = get(stub, task_id)
        mine = [
            t for t in stub.ListTasks(pb.ListTasksRequest(), timeout=30) if t.idempotency_key == key
        ]

    assert pb.TaskState.Name(task.state) == f"TASK_STATE_{case.state}", task.last_error
    assert task.attempts == case.attempts
    assert path_of(history) == case.path
    assert [t.task_id for t in mine] == [task_id], "one task per idempotency key"
    seen = with_oracle.observed()
    report(seen.summary([task_id]))
    assert seen.executions[task_id] == case.executions
    effects = 1 if case.state == "SUCCEEDED" else 0
    assert (seen.applied(task_id), seen.decisions[task_id]) == (effects, effects)
    expected = [dead_letter_group(task_id)] if case.state == "DEAD" else []
    wait_for(lambda: dlq_groups(system) == expected, 90, f"the DLQ to hold {expected}", every=2)


def _drive_api(system: LocalSystem, stub, case: Case, key: str) -> str:
    with pytest.raises(grpc.RpcError) as err:
        submit(stub, oracle.TASK_TYPE, case.payload, key=key)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    died_at_failpoint(system, "api")
    with system.channel("acme") as channel:  # the client retries with the same key
        retry = submit(system.stub(channel), oracle.TASK_TYPE, case.payload, key=key)
    assert retry.created == (case.point == "api.before_commit")
    return retry.task.task_id


def _drive_worker(system: LocalSystem, stub, case: Case, key: str) -> str:
    task_id = submit(
        stub, oracle.TASK_TYPE, case.payload, key=key, max_attempts=case.max_attempts
    ).task.task_id
    died_at_failpoint(system, "worker-1")
    return task_id


def _drive_relay(system: LocalSystem, stub, case: Case, key: str) -> str:
    if case.point == "enqueue.after_send" and case.delay_seconds:
        # A delayed task gets no send at submit: the relay sends it when due, and dies there.
        not_before = Timestamp()
        not_before.FromMilliseconds(time.time_ns() // 1_000_000 + int(case.delay_seconds * 1000))
        request = pb.SubmitTaskRequest(
            task_type=oracle.TASK_TYPE,
            payload=json.dumps(case.payload).encode(),
            idempotency_key=key,
            not_before=not_before,
        )
        task_id = stub.SubmitTask(request, timeout=10).task.task_id
        died_at_failpoint(system, "relay")
        return task_id
    if case.point == "enqueue.after_send":
        task_id = submit(stub, oracle.TASK_TYPE, case.payload, key=key).task.task_id
        died_at_failpoint(system, "relay")
        return task_id
    # A message the queue's redrive policy moved to the DLQ, its task still QUEUED (no worker
    # runs yet): what the compensator exists for.
    task = submit(stub, oracle.TASK_TYPE, case.payload, key=key).task
    body = json.dumps({"task_id": task.task_id, "task_type": task.task_type})
    system.backend.client("sqs").send_message(
        QueueUrl=system.dlq_url,
        MessageBody=body,
        MessageGroupId=f"{task.task_type}#0",
        MessageDeduplicationId=task.task_id,
    )
    died_at_failpoint(system, "relay")
    system.spawn("worker-1", "worker")  # finds the task DEAD and drops its main-queue message
    return task.task_id


def _drive_redrive(system: LocalSystem, stub, case: Case, key: str) -> str:
    task_id = submit(
        stub, oracle.TASK_TYPE, case.payload, key=key, max_attempts=case.max_attempts
    ).task.task_id
    assert wait_terminal(stub, task_id, timeout=60).state == pb.TASK_STATE_DEAD
    cli = redrive(system, task_id, armed(case.point))
    assert cli.wait(60) == -KILL, cli.stdout.read() if cli.stdout else ""
    wait_for(lambda: get(stub, task_id).task.state == pb.TASK_STATE_SUCCEEDED, 90, "redriven task")

    # The operator runs the redrive again once the killed run's hold on the DLQ message has
    # run out: the message left behind goes.
    def rerun() -> bool:
        out, _ = redrive(system, task_id, {}).communicate(timeout=60)
        assert any(outcome in out for outcome in ("discarded", "held", "not-found")), out
        return "discarded" in out

    wait_for(rerun, 90, "the operator's redrive to discard the stale DLQ message", every=3)
    return task_id


DRIVERS = {
    "api": _drive_api,
    "worker": _drive_worker,
    "relay": _drive_relay,
    "redrive": _drive_redrive,
}
