"""The AWS endpoint stops answering mid-load (the emulator frozen with SIGSTOP, as a network
partition looks to a client): callers get fast, clear errors, the circuit breaker opens, and
once AWS is back every task completes, each exactly once, without restarting anything."""

from __future__ import annotations

import os
import signal
import time
import uuid

import grpc
import pytest
from conveyor import schema
from conveyor.local.backend import start_backend
from conveyor.local.scrape import total
from conveyor.local.system import LocalSystem
from conveyor.v1 import task_service_pb2 as pb
from support import FAST_RECOVERY, TENANTS, submit, wait_for, wait_terminal

pytestmark = pytest.mark.chaos

OUTAGE_TUNING = {
    **FAST_RECOVERY,
    "CONVEYOR_AWS_READ_TIMEOUT_SECONDS": "1",
    "CONVEYOR_AWS_CONNECT_TIMEOUT_SECONDS": "1",
    "CONVEYOR_BREAKER_FAILURE_THRESHOLD": "2",
    "CONVEYOR_BREAKER_RESET_SECONDS": "2",
}


def test_frozen_aws_loses_nothing_and_recovers(tmp_path, aws_action_log):
    with start_backend() as backend:
        if backend.pid is None:
            pytest.skip("needs an emulator process on this machine to freeze (moto backend)")
        system = LocalSystem.provision(
            tmp_path, backend, TENANTS, tuning=OUTAGE_TUNING, action_log=aws_action_log
        )
        try:
            system.start(workers=2)
            _outage_scenario(system, backend.pid)
        finally:
            os.kill(backend.pid, signal.SIGCONT)
            codes = system.stop()
        assert all(code == 0 for code in codes.values()), codes


def _outage_scenario(system: LocalSystem, emulator_pid: int) -> None:
    with system.channel("acme") as channel:
        stub = system.stub(channel)
        accepted = {
            (key := uuid.uuid4().hex): submit(
                stub, "demo.sleep", {"seconds": 0.5}, key=key
            ).task.task_id
            for _ in range(8)
        }

        os.kill(emulator_pid, signal.SIGSTOP)
        refused: list[str] = []
        codes = []
        for _ in range(5):
            key = uuid.uuid4().hex
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                submit(stub, "demo.sleep", {"seconds": 0.5}, key=key, timeout=3)
            assert time.monotonic() - started < 3.5  # the deadline holds
            codes.append(err.value.code())
            refused.append(key)
        assert set(codes) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
        assert grpc.StatusCode.UNAVAILABLE in codes  # the breaker answered fast at the end
        api_metrics = [system.procs["api"].metrics_url]
        assert total(api_metrics, "conveyor_circuit_breaker_state", dependency="dynamodb") == 2
        time.sleep(4)  # longer than leases and visibility: workers' heartbeats fail too
        os.kill(emulator_pid, signal.SIGCONT)

        # Clients retry refused submits with the same keys (some may have committed anyway).
        def retried(key: str) -> str | None:
            try:
                return submit(stub, "demo.sleep", {"seconds": 0.5}, key=key, timeout=5).task.task_id
            except grpc.RpcError:
                return None  # breaker still half-open: try again

        for key in refused:
            accepted[key] = wait_for(lambda k=key: retried(k), 30, f"submit {key} to succeed")

        tasks = [wait_terminal(stub, task_id, timeout=90) for task_id in accepted.values()]
        assert [t.state for t in tasks] == [pb.TASK_STATE_SUCCEEDED] * len(accepted)
        assert len(set(accepted.values())) == len(accepted)  # one task per key
        ddb = system.backend.client("dynamodb")
        for task in tasks:
            ledger = ddb.query(
                TableName=system.table_name,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": schema.effect_pk(task.task_id)}},
                ConsistentRead=True,
            )["Items"]
            assert len(ledger) == 1
        assert total(api_metrics, "conveyor_circuit_breaker_state", dependency="dynamodb") == 0
