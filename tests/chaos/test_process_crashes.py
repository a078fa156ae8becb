"""Real processes killed or stopped mid-flight: nothing is lost and every effect is applied
exactly once, counted in the outside oracle's sink (conveyor_dev.local.oracle), not in the ledger
the system writes itself. A kill at each named step boundary is in test_failpoint_kills.py.

Each test runs its own emulator and system (the kills would disturb a shared one) with short
leases, so recovery takes seconds.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
from chaos_support import Oracle
from conveyor.v1 import task_service_pb2 as pb
from conveyor_dev.local.oracle import TASK_TYPE
from support import get, submit, wait_for, wait_state, wait_terminal

pytestmark = pytest.mark.chaos


def test_sigkilled_worker_task_completes_with_its_effect_applied_once(
    with_oracle: Oracle, report: Callable[[str], None]
):
    system = with_oracle.system
    system.start(workers=1)
    with system.channel("acme") as channel:
        stub = system.stub(channel)
        ids = [
            submit(stub, TASK_TYPE, {"seconds": 3, "effect_first": True}).task.task_id
            for _ in range(6)
        ]
        # Kill once some tasks have applied their effect but none has completed.
        wait_for(lambda: len(with_oracle.observed().keys) >= 2, 30, "effects applied")
        assert not any(get(stub, i).task.state == pb.TASK_STATE_SUCCEEDED for i in ids)
        system.signal("worker-1", signal.SIGKILL)
        system.procs["worker-1"].popen.wait(10)

        system.spawn("worker-2", "worker")
        tasks = [wait_terminal(stub, i, timeout=60) for i in ids]
        histories = {i: get(stub, i) for i in ids}

    assert [t.state for t in tasks] == [pb.TASK_STATE_SUCCEEDED] * len(ids)
    seen = with_oracle.observed()
    report(seen.summary(ids))
    assert {i: seen.applied(i) for i in ids} == dict.fromkeys(ids, 1)
    assert seen.duplicate_effects() == {}
    interrupted = [t for t in tasks if t.attempts == 2]
    assert interrupted, "the kill interrupted no task"
    for task in interrupted:  # the killed attempt applied it; the retry ran but did not
        assert [(e["attempt"], e["worker"]) for e in seen.of(task.task_id, "decided")] == [
            (1, "worker-1")
        ]
        assert (seen.executions[task.task_id], seen.calls[task.task_id]) == (2, 2)
        assert b'"applied_now": false' in task.result
        claims = [e.detail for e in histories[task.task_id].events if "claimed" in e.detail]
        assert claims == ["claimed by worker-1", "claimed by worker-2"]


def test_sigterm_drains_inflight_work_and_stops_polling(with_oracle: Oracle):
    system = with_oracle.system
    system.start(workers=1)
    with system.channel("acme") as channel:
        stub = system.stub(channel)
        running = submit(stub, TASK_TYPE, {"seconds": 3}).task.task_id
        wait_state(stub, running, {pb.TASK_STATE_RUNNING}, timeout=20)

        system.signal("worker-1", signal.SIGTERM)
        log = system.procs["worker-1"].log_path
        wait_for(lambda: "worker stopping" in log.read_text(), 10, "the worker to stop polling")
        later = submit(stub, TASK_TYPE, {"seconds": 0.1}).task.task_id

        assert system.procs["worker-1"].popen.wait(15) == 0
        assert get(stub, running).task.state == pb.TASK_STATE_SUCCEEDED
        assert get(stub, later).task.state in (pb.TASK_STATE_QUEUED, pb.TASK_STATE_PENDING)

        system.spawn("worker-2", "worker")
        assert wait_terminal(stub, later, timeout=30).state == pb.TASK_STATE_SUCCEEDED


def test_grace_period_over_hands_the_task_back(with_oracle: Oracle):
    system = with_oracle.system
    system.start(workers=1, extra={"CONVEYOR_SHUTDOWN_GRACE_SECONDS": "1"})
    with system.channel("acme") as channel:
        stub = system.stub(channel)
        # On its only attempt: handing back must not use that attempt up.
        task_id = submit(stub, TASK_TYPE, {"seconds": 4}, max_attempts=1).task.task_id
        wait_state(stub, task_id, {pb.TASK_STATE_RUNNING}, timeout=20)

        started = time.monotonic()
        system.signal("worker-1", signal.SIGTERM)
        assert system.procs["worker-1"].popen.wait(10) == 0
        assert time.monotonic() - started < 5
        handed_back = get(stub, task_id)
        assert handed_back.task.state == pb.TASK_STATE_QUEUED
        assert handed_back.events[-1].detail == "worker shut down before the task finished"

        system.spawn("worker-2", "worker")
        task = wait_terminal(stub, task_id, timeout=30)
        assert task.state == pb.TASK_STATE_SUCCEEDED
        assert task.attempts == 1  # the interrupted attempt was handed back, not counted


def test_a_sigkilled_worker_loses_none_of_the_messages_waiting_in_its_prefetch(
    with_oracle: Oracle, report: Callable[[str], None]
):
    """Messages the worker received ahead of a free slot are unclaimed: killed with them, it
    leaves them to turn visible at their timeout, and the next worker runs each task once."""
    system = with_oracle.system
    system.start(workers=1)
    worker = system.procs["worker-1"]
    sqs = system.backend.client("sqs")

    def depth() -> tuple[int, int]:
        """(visible, in flight) on the main queue."""
        got = sqs.get_queue_attributes(
            QueueUrl=system.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(got["ApproximateNumberOfMessages"]), int(
            got["ApproximateNumberOfMessagesNotVisible"]
        )

    with system.channel("acme") as channel:
        stub = system.stub(channel)
        first = submit(stub, TASK_TYPE, {"seconds": 0}).task.task_id  # the slots' pace
        wait_terminal(stub, first, timeout=30)
        slots = int(system.env()["CONVEYOR_WORKER_CONCURRENCY"])
        ids = [
            submit(stub, TASK_TYPE, {"seconds": 5, "effect_first": True}).task.task_id
            for _ in range(2 * slots)
        ]
        # Every slot busy, and more received than the slots run: some wait in the prefetch.
        wait_for(lambda: len(with_oracle.observed().keys) >= 1 + slots, 30, "slots busy")
        # The slots run `slots` of them: the rest were received into the prefetch.
        wait_for(lambda: depth() == (0, 2 * slots), 30, "all received, half of them waiting")
        system.signal("worker-1", signal.SIGKILL)
        worker.popen.wait(10)

        system.spawn("worker-2", "worker")
        tasks = [wait_terminal(stub, i, timeout=90) for i in ids]

    assert [t.state for t in tasks] == [pb.TASK_STATE_SUCCEEDED] * len(ids)
    seen = with_oracle.observed()
    report(seen.summary(ids))
    assert {i: seen.applied(i) for i in ids} == dict.fromkeys(ids, 1)
    assert seen.duplicate_effects() == {}
    never_claimed = [t for t in tasks if t.attempts == 1 and seen.executions[t.task_id] == 1]
    assert never_claimed, "no task waited in the prefetch when the worker was killed"
