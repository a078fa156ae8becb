"""The AWS endpoint stops answering mid-load (the emulator frozen with SIGSTOP, as a network
partition looks to a client): callers get fast, clear errors, the circuit breaker opens, and
once AWS is back every task completes, its effect applied exactly once (counted in the outside
oracle's sink), without restarting anything."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from conveyor.v1 import task_service_pb2 as pb
from conveyor_dev.emulators.backend import start_backend
from conveyor_dev.local import oracle
from conveyor_dev.local.scrape import total
from conveyor_dev.local.system import LocalSystem
from support import FAST_RECOVERY, TENANTS, submit, wait_for, wait_terminal

pytestmark = pytest.mark.chaos

OUTAGE_TUNING = {
    **FAST_RECOVERY,
    "CONVEYOR_AWS_READ_TIMEOUT_SECONDS": "1",
    "CONVEYOR_AWS_CONNECT_TIMEOUT_SECONDS": "1",
    "CONVEYOR_BREAKER_FAILURE_THRESHOLD": "2",
    "CONVEYOR_BREAKER_RESET_SECONDS": "2",
}
LEASES = ("CONVEYOR_LEASE_SECONDS", "CONVEYOR_VISIBILITY_TIMEOUT_SECONDS")


def test_frozen_aws_loses_nothing_and_recovers(
    tmp_path: Path, aws_action_log: Path, report: Callable[[str], None]
):
    sink = tmp_path / "oracle-sink.jsonl"
    with start_backend() as backend:
        if backend.pid is None:
            pytest.skip("needs an emulator process on this machine to freeze (moto backend)")
        tuning = {**OUTAGE_TUNING, **oracle.worker_env(sink)}
        system = LocalSystem.provision(
            tmp_path, backend, TENANTS, tuning=tuning, action_log=aws_action_log
        )
        try:
            system.start(workers=2)
            report(_outage_scenario(system, backend.pid, sink))
        finally:
            os.kill(backend.pid, signal.SIGCONT)
            codes = system.stop()
        assert all(code == 0 for code in codes.values()), codes


def _outage_scenario(system: LocalSystem, emulator_pid: int, sink: Path) -> str:
    with system.channel("acme") as channel:
        stub = system.stub(channel)
        accepted = {
            (key := uuid.uuid4().hex): submit(
                stub, oracle.TASK_TYPE, {"seconds": 0.5}, key=key
            ).task.task_id
            for _ in range(8)
        }

        os.kill(emulator_pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        refused: list[str] = []
        codes = []
        for _ in range(5):
            key = uuid.uuid4().hex
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                submit(stub, oracle.TASK_TYPE, {"seconds": 0.5}, key=key, timeout=3)
            assert time.monotonic() - started < 3.5  # the deadline holds
            codes.append(err.value.code())
            refused.append(key)
        assert set(codes) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
        assert grpc.StatusCode.UNAVAILABLE in codes  # the breaker answered fast at the end
        api_metrics = [system.procs["api"].metrics_url]
        assert total(api_metrics, "conveyor_circuit_breaker_state", dependency="dynamodb") == 2
        # Every lease and visibility timeout was last extended before the freeze: keep AWS
        # frozen until all have run out, so the workers' heartbeats fail for good.
        lapse = max(int(OUTAGE_TUNING[v]) for v in LEASES) + 1
        time.sleep(max(0.0, frozen_at + lapse - time.monotonic()))
        os.kill(emulator_pid, signal.SIGCONT)

        # Clients retry refused submits with the same keys (some may have committed anyway).
        def retried(key: str) -> str | None:
            try:
                return submit(
                    stub, oracle.TASK_TYPE, {"seconds": 0.5}, key=key, timeout=5
                ).task.task_id
            except grpc.RpcError:
                return None  # breaker still half-open: try again

        for key in refused:
            accepted[key] = wait_for(lambda k=key: retried(k), 30, f"submit {key} to succeed")

        tasks = [wait_terminal(stub, task_id, timeout=90) for task_id in accepted.values()]
        assert [t.state for t in tasks] == [pb.TASK_STATE_SUCCEEDED] * len(accepted)
        # The tenant's own tasks, not the ids this client happened to be told: one per key.
        keys = [t.idempotency_key for t in stub.ListTasks(pb.ListTasksRequest(), timeout=30)]
        assert sorted(keys) == sorted(accepted)
        seen = oracle.read(sink)
        assert {i: seen.applied(i) for i in accepted.values()} == dict.fromkeys(
            accepted.values(), 1
        )
        assert seen.duplicate_effects() == {}
        assert total(api_metrics, "conveyor_circuit_breaker_state", dependency="dynamodb") == 0
    return seen.summary(list(accepted.values()))
