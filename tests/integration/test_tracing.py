"""One trace runs from SubmitTask through DynamoDB and SQS into the worker's CONSUMER span, and
every log line is JSON carrying trace_id and span_id."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conveyor_dev.emulators.backend import start_backend
from conveyor_dev.local.certs import generate_deployment
from conveyor_dev.local.system import LocalSystem
from support import submit, wait_for, wait_terminal

pytestmark = pytest.mark.integration
PROBE = Path(__file__).with_name("trace_probe.py")


def test_one_trace_from_submit_to_the_worker(tmp_path):
    certs = generate_deployment(tmp_path / "certs", ["acme"])
    with start_backend() as backend:
        resources = backend.provision("dev")
        client = certs.clients["acme"]
        env = backend.child_env()
        env.update(certs.server.env())
        env.update(
            {
                "CONVEYOR_TABLE_NAME": resources.table_name,
                **resources.queue_environment(),
                "PROBE_CLIENT_CA": str(client.ca),
                "PROBE_CLIENT_CERT": str(client.cert),
                "PROBE_CLIENT_KEY": str(client.key),
            }
        )
        run = subprocess.run(
            [sys.executable, str(PROBE)], env=env, capture_output=True, text=True, timeout=120
        )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    spans = report["spans"]

    server = next(s for s in spans if s["name"] == "/conveyor.v1.TaskService/SubmitTask")
    consumer = next(
        s
        for s in spans
        if s["kind"] == "CONSUMER" and s["attributes"].get("conveyor.task_id") == report["task_id"]
    )
    assert server["kind"] == "SERVER"
    assert consumer["trace_id"] == server["trace_id"]
    assert consumer["parent"] == server["span_id"]
    in_trace = {(s["name"], s["kind"]) for s in spans if s["trace_id"] == server["trace_id"]}
    # The API's commit and send, and the worker's claim and completion, all belong to the trace
    # (a first delivery is claimed without a read: its message carries the task; settled
    # messages are deleted in batches, on no task's trace).
    assert ("DynamoDB.TransactWriteItems", "CLIENT") in in_trace
    assert any(kind in ("CLIENT", "PRODUCER") and "SendMessage" in name for name, kind in in_trace)
    worker_calls = [s for s in spans if s["parent"] == consumer["span_id"]]
    assert [s["name"] for s in worker_calls].count("DynamoDB.UpdateItem") >= 2


def test_logs_are_json_lines_with_trace_ids_shared_across_processes(system: LocalSystem, acme):
    task = wait_terminal(acme, submit(acme, "demo.sleep", {"seconds": 0}).task.task_id)

    def records() -> dict[str, list[dict]]:
        out = {}
        for name, proc in system.procs.items():
            lines = [line for line in proc.log_path.read_text().splitlines() if line.strip()]
            out[name] = [json.loads(line) for line in lines]  # every line is one JSON object
        return out

    def about(message: str, where: str) -> dict | None:
        return next(
            (
                r
                for name, rs in records().items()
                if name.startswith(where)
                for r in rs
                if r.get("task_id") == task.task_id and r["message"] == message
            ),
            None,
        )

    # The worker logs the attempt just after it records the outcome: allow it a moment.
    finished = wait_for(lambda: about("task attempt finished", "worker"), 10, "the worker's log")
    submitted = about("task submitted", "api")
    assert submitted is not None
    for record in (r for rs in records().values() for r in rs):
        assert {"time", "level", "message", "trace_id", "span_id"} <= record.keys(), record
    assert len(submitted["trace_id"]) == 32 and submitted["trace_id"] != "0" * 32
    assert finished["trace_id"] == submitted["trace_id"]
    assert finished["span_id"] != submitted["span_id"]
