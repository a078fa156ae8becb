"""IAM proven both ways, against the AWS actions the real service processes performed.

The integration and chaos tiers arm `CONVEYOR_AWS_ACTION_LOG` (one file per session), and so
does the short workload below, which always runs and takes every path the task roles grant
(see `_workload`). This module runs last in the session (tests/infra/conftest.py), so it also
checks what the tiers before it recorded. Every recorded action must be granted to its
service's task role on that stack's ARN, in every compute stack; every task-role grant must be
exercised or justified in UNEXERCISED; an empty record cannot pass."""

from __future__ import annotations

import fnmatch
import json
import signal
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from conveyor.domain import LANES, lane_suffix
from conveyor.v1 import task_service_pb2 as pb
from conveyor_dev.emulators.backend import start_backend
from conveyor_dev.emulators.declared import Declaration
from conveyor_dev.local.scrape import total
from conveyor_dev.local.system import LocalSystem
from conveyor_infra.task_queue import task_queue_name
from google.protobuf.timestamp_pb2 import Timestamp
from stack_support import COMPUTE_STACKS, SERVICES
from support import TENANTS, get, submit, wait_for, wait_state, wait_terminal

# Task-role grants the services' own processes do not perform, each with its reason. (The
# execution roles' grants are used by the ECS agent, the trace gateway's by its collector: no
# Conveyor process holds them.)
UNEXERCISED = {
    ("*", "aps:RemoteWrite", "workspace"): "the collector sidecar remote-writes, not a process",
    ("api", "dynamodb:GetItem", "table"): (
        "reads the idempotency record only when a submit's cancelled transaction did not hand "
        "it back (a TransactionConflict): tests/store/test_store_submit.py"
    ),
    ("relay", "dynamodb:GetItem", "table"): (
        "reads a schedule, and commits its slot's task, only at a slot (up to a minute away): "
        "tests/store/test_schedule_firing.py"
    ),
    ("relay", "dynamodb:PutItem", "table"): "see the relay's GetItem",
    # The relay's sends and re-files go to a task's lane by the same code as the default lane's,
    # exercised there (conveyor.queue: the queue is chosen by the task's lane).
    ("relay", "sqs:SendMessage", "queue:high"): "the outbox re-send of a high task; see queue",
    ("relay", "sqs:SendMessage", "dlq:high"): "the DLQ compensator's re-file; see dlq",
    ("relay", "sqs:DeleteMessage", "dlq:high"): "the DLQ compensator's re-file; see dlq",
    ("worker", "sqs:SendMessage", "queue"): (
        "replaces a message whose receives cannot cover the task's attempts left (visibility "
        "losses used them): tests/store/test_store_worker.py"
    ),
    ("worker", "sqs:SendMessage", "queue:high"): "see the worker's SendMessage on queue",
    ("worker", "dynamodb:GetItem", "table"): (
        "reads an effect's ledger item only when recording it met an earlier record: "
        "tests/store/test_store_effects.py"
    ),
}


def _grants(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (action, resource)
        for statement in document["Statement"]
        if statement["Effect"] == "Allow"
        for action in statement["Action"]
        for resource in statement["Resource"]
    ]


def _allows(grants: list[tuple[str, str]], action: str, arn: str) -> bool:
    return any(
        fnmatch.fnmatchcase(action, granted_action) and fnmatch.fnmatchcase(arn, granted_arn)
        for granted_action, granted_arn in grants
    )


def arn_of(declaration: Declaration, local: Declaration, resource: str) -> str:
    """The stack's ARN for a resource the local system addressed by its dev-stack name (behind
    the per-run prefix a shared explicit endpoint gets, conveyor_dev.emulators.backend)."""
    if resource == "*":
        return resource  # an action with no resource (conveyor.aws._addressed)
    name, _, index = resource.removeprefix("table/").partition("/index/")
    kind = "aws:dynamodb/table:Table" if resource.startswith("table/") else "aws:sqs/queue:Queue"
    (declared,) = [r for r in local.of_type(kind) if name.endswith(str(r.inputs["name"]))]
    arn = str(declaration.named(declared.name).outputs["arn"])
    return f"{arn}/index/{index}" if index else arn


def ungranted(
    records: list[dict[str, str]], declaration: Declaration, local: Declaration
) -> list[str]:
    """Every recorded action the service's task role does not grant on the stack's ARN."""
    missing = []
    for record in records:
        service = record["process"].removeprefix("conveyor-")
        document = json.loads(declaration.named(f"{service}-iam-task-policy").inputs["policy"])
        arn = arn_of(declaration, local, record["resource"])
        if not _allows(_grants(document), record["action"], arn):
            missing.append(f"{service}: {record['action']} on {arn}")
    return missing


def _symbol(declaration: Declaration, arn: str) -> str:
    names = {
        declaration.named(f"{task_queue_name(lane)}-{kind}").outputs["arn"]: kind
        + lane_suffix(lane, ":")
        for lane in LANES
        for kind in ("queue", "dlq")
    }
    names[declaration.named("monitoring-prometheus").outputs["arn"]] = "workspace"
    table = declaration.named("store-table").outputs["arn"]
    return names.get(arn) or ("table" if arn == table else arn.removeprefix(f"{table}/"))


@pytest.fixture(scope="module")
def recorded(aws_action_log: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    with start_backend() as backend:
        system = LocalSystem.provision(
            tmp_path_factory.mktemp("iam"), backend, TENANTS, action_log=aws_action_log
        )
        try:
            _workload(system)
        finally:
            codes = system.stop()
    assert all(code == 0 for code in codes.values()), codes
    return [json.loads(line) for line in aws_action_log.read_text().splitlines()]


def _redrive_by_hand(system: LocalSystem) -> None:
    """What SQS's redrive policy does after too many receives: the message moves to the DLQ."""
    sqs = system.backend.client("sqs")
    (message,) = sqs.receive_message(
        QueueUrl=system.queue_url,
        WaitTimeSeconds=5,
        VisibilityTimeout=60,
        MessageSystemAttributeNames=["MessageGroupId"],
        MessageAttributeNames=["All"],
    )["Messages"]
    sqs.send_message(
        QueueUrl=system.dlq_url,
        MessageBody=message["Body"],
        MessageGroupId=message["Attributes"]["MessageGroupId"],
        MessageDeduplicationId=message["MessageId"],
        MessageAttributes=message.get("MessageAttributes", {}),
    )
    sqs.delete_message(QueueUrl=system.queue_url, ReceiptHandle=message["ReceiptHandle"])


def _relay_sqs_calls(system: LocalSystem, operation: str) -> float:
    """The relay's own request counter (conveyor_aws_requests_total), from its /metrics."""
    url = system.procs["relay"].metrics_url
    return total([url], "conveyor_aws_requests_total", service="sqs", operation=operation)


def _schedule_round_trip(stub: Any) -> None:
    """The API's schedule writes: create (PutItem), pause (UpdateItem), delete (DeleteItem)."""
    schedule = pb.Schedule(
        name="iam-check", cron="0 3 * * *", time_zone="UTC", task_type="demo.sleep", payload=b"{}"
    )
    stub.CreateSchedule(pb.CreateScheduleRequest(schedule=schedule), timeout=10)
    stub.PauseSchedule(pb.PauseScheduleRequest(name="iam-check", paused=True), timeout=10)
    assert stub.DeleteSchedule(pb.DeleteScheduleRequest(name="iam-check"), timeout=10).deleted


def _submit_delayed(stub: Any) -> str:
    """A task due a second from now, which the relay sends when due."""
    not_before = Timestamp()
    not_before.FromMilliseconds(int(time.time() * 1000) + 1000)
    request = pb.SubmitTaskRequest(
        task_type="demo.noop", payload=b"{}", idempotency_key=uuid.uuid4().hex
    )
    request.not_before.CopyFrom(not_before)
    return str(stub.SubmitTask(request, timeout=10).task.task_id)


def _workload(system: LocalSystem) -> None:
    """Every path of the task roles' grants: submit, get, list, cancel; the relay re-sending a
    mark the API left (killed between commit and send), compensating a task SQS moved to the
    DLQ and unhiding a dead-lettered message; a worker's success, heartbeat and dead letter."""
    api = system.spawn("api", "api", {"CONVEYOR_FAILPOINTS": "api.after_commit=kill"})
    system.spawn("relay", "relay")
    system.wait_ready()
    with system.channel("acme") as channel, pytest.raises(grpc.RpcError):
        submit(system.stub(channel), key="killed-after-commit")
    assert api.popen.wait(10) == -signal.SIGKILL
    system.spawn("api", "api")
    system.wait_ready()
    with system.channel("acme") as channel:
        stub = system.stub(channel)
        stranded = submit(stub, key="killed-after-commit").task.task_id
        wait_for(
            lambda: "sent by the outbox relay" in [e.detail for e in get(stub, stranded).events],
            30,
            "the relay to send the mark the killed API left",
        )
        _redrive_by_hand(system)  # no worker yet: the stranded task's is the only message
        wait_state(stub, stranded, {pb.TASK_STATE_DEAD})

        system.spawn("worker-1", "worker")
        system.wait_ready()
        heartbeat = float(system.tuning["CONVEYOR_HEARTBEAT_INTERVAL_SECONDS"])
        done = submit(stub, "demo.sleep", {"seconds": heartbeat * 1.5}).task.task_id
        poison = submit(stub, "demo.poison", max_attempts=1).task.task_id
        # The high lane's queue and DLQ: a run long enough for a heartbeat, a dead letter.
        high = submit(stub, "demo.sleep", {"seconds": heartbeat * 1.5}, lane="high").task.task_id
        high_poison = submit(stub, "demo.poison", max_attempts=1, lane="high").task.task_id
        cancelled = submit(stub, "demo.sleep", {"seconds": 30}).task.task_id
        stub.CancelTask(pb.CancelTaskRequest(task_id=cancelled), timeout=10)
        delayed = _submit_delayed(stub)  # the relay reads due tasks in batches (BatchGetItem)
        for task_id in (done, poison, cancelled, high, high_poison, delayed):
            wait_terminal(stub, task_id)
        assert list(stub.ListTasks(pb.ListTasksRequest(), timeout=10))
        _schedule_round_trip(stub)
        # The poison task's dead letter stays in the DLQ; the relay's next sweeps peek and
        # unhide it.
        unhidden = _relay_sqs_calls(system, "ChangeMessageVisibility")
        wait_for(
            lambda: _relay_sqs_calls(system, "ChangeMessageVisibility") > unhidden,
            30,
            "a relay sweep to unhide the dead-lettered message",
        )


def test_the_workload_recorded_every_service(recorded: list[dict]) -> None:
    assert {r["process"] for r in recorded} >= {f"conveyor-{s}" for s in SERVICES}
    assert len(recorded) >= 20


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
def test_every_recorded_action_is_granted_on_the_stacks_arns(
    declarations: dict[str, Declaration], recorded: list[dict], stack: str
) -> None:
    assert ungranted(recorded, declarations[stack], declarations["dev"]) == []


@pytest.mark.parametrize("stack", COMPUTE_STACKS)
def test_every_task_role_grant_is_exercised_or_justified(
    declarations: dict[str, Declaration], recorded: list[dict], stack: str
) -> None:
    declaration, local = declarations[stack], declarations["dev"]
    unexercised = []
    for service in SERVICES:
        document = json.loads(declaration.named(f"{service}-iam-task-policy").inputs["policy"])
        used = [
            (r["action"], arn_of(declaration, local, r["resource"]))
            for r in recorded
            if r["process"] == f"conveyor-{service}"
        ]
        for action, arn in _grants(document):
            symbol = _symbol(declaration, arn)
            if {(service, action, symbol), ("*", action, symbol)} & UNEXERCISED.keys():
                continue
            if not any(_allows([(action, arn)], a, r) for a, r in used):
                unexercised.append(f"{service}: {action} on {symbol}")
    assert unexercised == []


def test_a_missing_grant_fails_the_check(
    declarations: dict[str, Declaration], recorded: list[dict]
) -> None:
    """The relay's DLQ compensator grants (issue 10, problem 2) removed again."""
    prod = declarations["prod"]
    policy = prod.named("relay-iam-task-policy")
    document = json.loads(policy.inputs["policy"])
    document["Statement"] = [s for s in document["Statement"] if s["Sid"] != "DlqCompensation"]
    inputs = {**policy.inputs, "policy": json.dumps(document)}
    resources = [replace(r, inputs=inputs) if r is policy else r for r in prod.resources]
    broken = Declaration(stack="prod", resources=tuple(resources), outputs=prod.outputs)
    missing = ungranted(recorded, broken, declarations["dev"])
    dlq = prod.named("tasks-dlq").outputs["arn"]
    for action in ("ReceiveMessage", "ChangeMessageVisibility", "SendMessage", "DeleteMessage"):
        assert f"relay: sqs:{action} on {dlq}" in missing
