"""Helpers shared by the integration, chaos and e2e tiers (imported as `support`)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc
from conveyor.api.convert import TERMINAL_STATES
from conveyor.v1 import task_service_pb2 as pb
from conveyor.v1 import task_service_pb2_grpc as pb_grpc
from conveyor_dev.emulators.backend import Backend
from conveyor_dev.local.system import LocalSystem

T = TypeVar("T")
TERMINAL = TERMINAL_STATES
TENANTS = ("acme", "globex")
# Short leases and timeouts so crash recovery happens within seconds, not the 30 s defaults.
FAST_RECOVERY = {
    "CONVEYOR_VISIBILITY_TIMEOUT_SECONDS": "6",
    "CONVEYOR_LEASE_SECONDS": "6",
    "CONVEYOR_HEARTBEAT_INTERVAL_SECONDS": "1",
}


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.2) -> T:
    """Poll `check` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def start_system(
    workdir: Path,
    backend: Backend,
    *,
    stack: str,
    workers: int = 2,
    tuning: dict[str, str] | None = None,
    extra: dict[str, str] | None = None,
    action_log: Path | None = None,
) -> LocalSystem:
    """A LocalSystem on its own stack's resources (so tiers do not share queues)."""
    system = LocalSystem.provision(
        workdir, backend, TENANTS, stack=stack, tuning=tuning, action_log=action_log
    )
    system.start(workers=workers, extra=extra)
    return system


def submit(
    stub: pb_grpc.TaskServiceStub,
    task_type: str = "demo.sleep",
    payload: dict | bytes | None = None,
    *,
    key: str | None = None,
    max_attempts: int = 0,
    lane: str = "",
    timeout: float = 10,
) -> pb.SubmitTaskResponse:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload or {}).encode()
    return stub.SubmitTask(
        pb.SubmitTaskRequest(
            task_type=task_type,
            payload=raw,
            idempotency_key=key or uuid.uuid4().hex,
            max_attempts=max_attempts,
            lane=lane,
        ),
        timeout=timeout,
    )


def get(stub: pb_grpc.TaskServiceStub, task_id: str) -> pb.GetTaskResponse:
    return stub.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10)


def wait_state(
    stub: pb_grpc.TaskServiceStub, task_id: str, states: set[int], timeout: float = 60
) -> pb.Task:
    names = ",".join(pb.TaskState.Name(s) for s in states)

    def reached() -> pb.Task | None:
        task = get(stub, task_id).task
        return task if task.state in states else None

    return wait_for(reached, timeout, f"task {task_id} to reach {names}")


def wait_terminal(stub: pb_grpc.TaskServiceStub, task_id: str, timeout: float = 60) -> pb.Task:
    return wait_state(stub, task_id, TERMINAL, timeout)


def path_of(response: pb.GetTaskResponse) -> list[str]:
    """The task's history as state names, e.g. ['PENDING', 'QUEUED', 'RUNNING', 'SUCCEEDED']."""
    return [pb.TaskState.Name(e.to_state).removeprefix("TASK_STATE_") for e in response.events]


def rpc_code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    raise AssertionError("the call succeeded; an error status was expected")


def cli(system: LocalSystem, tenant: str, *args: str, timeout: float = 60):
    """Run the real `conveyor` CLI as `tenant` against `system`; wide output, no colours."""
    import subprocess
    import sys

    env = system.cli_env(tenant)
    env.update({"COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"})
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
