"""`make bench` phase "fairness": how long tenant B's first task waits behind tenant A's
backlog of the same type (message groups `<tenant>#<type>#<shard>`, conveyor.queue).

The backlog is queued first with no worker running, then B submits one task, then the
workers start (2 processes x 4 slots, 4 groups per tenant and type, as `make local`). Reported:
B's start after processing began (the first of A's tasks to start), how many of A's tasks
started before it, and how long A's whole backlog took to start: what B would have waited
sharing A's groups, which the emulator serves oldest head first.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conveyor.v1 import task_service_pb2 as pb
from conveyor_dev.emulators.backend import start_backend
from conveyor_dev.local.system import LocalSystem

TENANT_A, TENANT_B = "tenant-a", "tenant-b"
TASK_TYPE = "demo.noop"
WORKERS = 2
TUNING = {
    "CONVEYOR_WORKER_CONCURRENCY": "4",
    "CONVEYOR_MESSAGE_GROUP_SHARDS": "4",
    # The backlog is submitted as fast as the clients go: no submit quota in the way.
    "CONVEYOR_TENANT_SUBMITS_PER_SECOND": "100000",
    "CONVEYOR_TENANT_SUBMIT_BURST": "100000",
}


def _submit(stub: Any) -> str:
    request = pb.SubmitTaskRequest(
        task_type=TASK_TYPE, payload=b"{}", idempotency_key=uuid.uuid4().hex
    )
    return str(stub.SubmitTask(request, timeout=30).task.task_id)


def _started_ms(stub: Any, task_id: str) -> int | None:
    events = stub.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=30).events
    runs = [e.at.ToMilliseconds() for e in events if e.to_state == pb.TASK_STATE_RUNNING]
    return runs[0] if runs else None


def phase_fairness(backlog: int, workdir: Any, clients: int = 8) -> dict[str, Any]:
    with start_backend() as backend:
        system = LocalSystem.provision(workdir, backend, (TENANT_A, TENANT_B), tuning=TUNING)
        try:
            system.start(workers=0)
            with system.channel(TENANT_A) as a_channel, system.channel(TENANT_B) as b_channel:
                a, b = system.stub(a_channel), system.stub(b_channel)
                with ThreadPoolExecutor(clients) as pool:
                    a_ids = list(pool.map(lambda _: _submit(a), range(backlog)))
                b_id = _submit(b)
                for i in range(1, WORKERS + 1):
                    system.spawn(f"worker-{i}", "worker")
                deadline = time.monotonic() + 600
                while (a_last := _started_ms(a, a_ids[-1])) is None or _started_ms(b, b_id) is None:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the backlog did not start within 600 s")
                    time.sleep(1)
                b_started = _started_ms(b, b_id)
                with ThreadPoolExecutor(clients) as pool:
                    a_started = [t for t in pool.map(lambda i: _started_ms(a, i), a_ids) if t]
        finally:
            system.stop()
    assert b_started is not None
    first = min(a_started)
    return {
        "backlog": backlog,
        "b_start_after_processing_began_s": (b_started - first) / 1000,
        "a_tasks_started_before_b": sum(1 for t in a_started if t < b_started),
        "a_backlog_start_span_s": (max(max(a_started), a_last) - first) / 1000,
    }
