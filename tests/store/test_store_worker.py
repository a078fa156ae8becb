"""The worker loop in-process (conveyor.worker.runner.Worker.run on a thread) against the real
store and queues, with the demo handlers: claim, settle, retry, dead-letter, cancel, hand back.

Timings are shrunk (heartbeat 0.5 s, lease 2 s, visibility 5 s, backoff base 0.1 s so a retry
comes back at once); every wait polls with a deadline.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conveyor.domain import MAX_ERROR_CHARS, Task, TaskState
from conveyor.queue import parse
from conveyor.settings import WorkerSettings
from conveyor.store import Conflict, TaskStore, now_ms
from conveyor.tasks.registry import Backoff, declare, load
from conveyor.worker.handlers import PermanentError, TaskCancelled
from conveyor.worker.runner import Worker
from conveyor_dev.inject import faults
from conveyor_dev.local import demo_handlers
from conveyor_dev.local.demo_handlers import DOWNSTREAM_DIR, NoParams
from store_support import LEASE, ddb_calls, metric, relay_on, submit
from support import wait_for

S = TaskState
DEMO = load([demo_handlers.__name__])
TERMINAL_STATES = {s.value for s in TaskState if s.terminal}


def in_state(store: TaskStore, task_id: str, state: TaskState) -> Callable[[], Task | None]:
    def check() -> Task | None:
        task = store.get(task_id)
        return task if task is not None and task.state == state else None

    return check


class Running:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.stop = threading.Event()
        self.thread = threading.Thread(target=worker.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def shutdown(self, timeout: float = 15.0) -> None:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"


@pytest.fixture
def start_worker(aws_backend, settings, store, queue) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(types: dict[str, Any] | None = None, **overrides: Any) -> Running:
        values: dict[str, Any] = {
            **aws_backend.env(),
            "table_name": settings.table_name,
            **settings.lane_url_settings(),
            "metrics_listen": "127.0.0.1:0",
            "worker_id": f"w-{uuid.uuid4().hex[:6]}",
            "worker_concurrency": 2,
            "poll_wait_seconds": 1,
            "visibility_timeout_seconds": 5,
            "heartbeat_interval_seconds": 0.5,
            "lease_seconds": 2,
            "backoff_base_seconds": 0.1,
            "backoff_max_seconds": 1,
            "shutdown_grace_seconds": 5,
            **overrides,
        }
        running = Running(Worker(WorkerSettings(**values), store, queue, types or DEMO))
        started.append(running)
        return running

    yield start
    for running in started:
        if not running.stop.is_set():
            running.shutdown()


def add_type(running: Running, name: str, handler: Callable[..., Any], **policy: Any) -> None:
    """Declare an ad-hoc type `name` (payload: any JSON object) on a running worker, which
    looks its types up per message."""
    declared = declare(name, handler, payload=NoParams, **policy)
    running.worker.types = {**DEMO, name: declared}


def _enqueue(store, queue, task_type: str, params: dict, max_attempts: int = 3) -> Task:
    task = submit(
        store, task_type=task_type, payload=json.dumps(params).encode(), max_attempts=max_attempts
    )
    queue.send(task.task_id, task.task_type, tenant=task.tenant)
    return task


def _path(task: Task) -> list[tuple[TaskState | None, TaskState]]:
    return [(e.from_state, e.to_state) for e in task.events]


def test_a_task_runs_once_and_succeeds(store, queue, raw, start_worker):
    labels = {"task_type": "demo.sleep", "outcome": "succeeded"}
    succeeded = metric("conveyor_tasks_completed_total", **labels)
    start_worker()
    task = _enqueue(store, queue, "demo.sleep", {"seconds": 0.05})

    done = wait_for(in_state(store, task.task_id, S.SUCCEEDED), 15, "SUCCEEDED")

    assert json.loads(done.result) == {"slept": 0.05, "applied_now": True}
    assert (done.attempts, done.lease_owner) == (1, "")
    assert _path(done) == [
        (None, S.PENDING),
        (S.PENDING, S.QUEUED),  # the worker found it PENDING and recorded the canonical path
        (S.QUEUED, S.RUNNING),
        (S.RUNNING, S.SUCCEEDED),
    ]
    assert raw.item(f"EFFECT#{task.task_id}", "slept") is not None
    wait_for(
        lambda: raw.depth(raw.res.queue_url) == (0, 0), 15, "the message to be deleted", every=0.05
    )
    assert metric("conveyor_tasks_completed_total", **labels) == succeeded + 1


def test_a_transient_failure_is_retried(store, queue, start_worker):
    start_worker()
    task = _enqueue(store, queue, "demo.flaky", {"fail_times": 1})
    done = wait_for(
        in_state(store, task.task_id, S.SUCCEEDED), 15, "SUCCEEDED after a retry", every=0.05
    )
    assert done.attempts == 2
    assert "transient failure on attempt 1" in done.last_error
    assert (S.RUNNING, S.QUEUED) in _path(done)
    retry = next(e for e in done.events if e.to_state == S.QUEUED and e.from_state == S.RUNNING)
    assert retry.detail.startswith("retry in ")


def test_exhausted_attempts_end_dead_with_the_message_in_the_dlq(store, queue, raw, start_worker):
    start_worker()
    task = _enqueue(store, queue, "demo.poison", {}, max_attempts=2)
    dead = wait_for(in_state(store, task.task_id, S.DEAD), 15, "DEAD")
    assert dead.attempts == 2
    assert "poison task" in dead.last_error
    [message] = wait_for(lambda: raw.receive(raw.res.dlq_url), 15, "the DLQ message")
    assert parse(message).task_id == task.task_id
    assert "poison task" in parse(message).error
    wait_for(
        lambda: raw.depth(raw.res.queue_url) == (0, 0), 15, "the main queue to empty", every=0.05
    )


def test_a_permanent_error_fails_on_the_first_attempt(store, queue, start_worker):
    start_worker()
    task = _enqueue(store, queue, "demo.reject", {}, max_attempts=5)
    failed = wait_for(in_state(store, task.task_id, S.FAILED), 15, "FAILED")
    assert (failed.attempts, failed.last_error) == (1, "rejected by the demo handler")


def test_a_task_type_without_handler_fails(store, queue, start_worker):
    start_worker()
    task = _enqueue(store, queue, "no.such.type", {})
    failed = wait_for(in_state(store, task.task_id, S.FAILED), 15, "FAILED")
    assert "no handler" in failed.last_error


def test_cancel_while_running_stops_the_handler_at_a_heartbeat(store, queue, raw, start_worker):
    start_worker()
    task = _enqueue(store, queue, "demo.sleep", {"seconds": 60})
    running = wait_for(in_state(store, task.task_id, S.RUNNING), 15, "RUNNING")
    cancelled_at = time.monotonic()
    store.transition(running, S.CANCELLED, detail="cancelled by the client", remove=LEASE)

    wait_for(
        lambda: raw.depth(raw.res.queue_url) == (0, 0), 15, "the message to be deleted", every=0.05
    )
    assert time.monotonic() - cancelled_at < 10  # a heartbeat, not the 60 s of work
    final = store.get(task.task_id)
    assert final is not None and final.state == S.CANCELLED
    assert raw.item(f"EFFECT#{task.task_id}", "slept") is None  # the work never completed


def test_a_duplicate_delivery_does_not_run_the_task_twice(store, queue, raw, start_worker):
    task = _enqueue(store, queue, "demo.sleep", {"seconds": 0.3})
    # SQS delivered twice:
    queue.send(task.task_id, task.task_type, tenant=task.tenant, dedup_id=f"{task.task_id}.dup")
    start_worker()
    done = wait_for(in_state(store, task.task_id, S.SUCCEEDED), 15, "SUCCEEDED")
    # Same task, same group: the duplicate comes after the first message is deleted.
    wait_for(
        lambda: raw.depth(raw.res.queue_url) == (0, 0),
        15,
        "both messages to be consumed",
        every=0.05,
    )
    final = store.get(task.task_id)
    assert final == done
    assert [e.to_state for e in final.events].count(S.RUNNING) == 1


def test_a_message_for_an_unknown_task_is_dropped(queue, raw, start_worker):
    start_worker()
    queue.send(uuid.uuid4().hex, "demo.sleep", tenant="t")
    wait_for(
        lambda: raw.depth(raw.res.queue_url) == (0, 0), 15, "the message to be deleted", every=0.05
    )


def test_shutdown_hands_an_unfinished_task_back(store, queue, raw, start_worker):
    # Grace outlasts the 1 s long poll (so the poller is gone when run() returns) but not the
    # task's 60 s of work.
    worker = start_worker(shutdown_grace_seconds=1.5)
    task = _enqueue(store, queue, "demo.sleep", {"seconds": 60})
    wait_for(in_state(store, task.task_id, S.RUNNING), 15, "RUNNING")
    worker.shutdown()

    back = store.get(task.task_id)
    assert back is not None
    assert (back.state, back.lease_owner) == (S.QUEUED, "")
    assert back.events[-1].detail == "worker shut down before the task finished"
    assert raw.depth(raw.res.queue_url) == (1, 0)  # visible again for another worker


def test_a_result_over_the_limit_fails_the_task(store, queue, start_worker):
    from conveyor.domain import MAX_RESULT_BYTES

    def huge(ctx: Any, _: Any) -> bytes:
        return b"x" * (MAX_RESULT_BYTES + 1)

    worker = start_worker()
    add_type(worker, "demo.huge", huge)  # looked up per message
    task = _enqueue(store, queue, "demo.huge", {})

    failed = wait_for(in_state(store, task.task_id, S.FAILED), 15, "FAILED")

    assert "the limit is" in failed.last_error
    assert failed.attempts == 1


def test_hand_back_does_not_use_up_the_last_attempt(store, queue, raw, start_worker):
    worker = start_worker(shutdown_grace_seconds=1.5)
    task = _enqueue(store, queue, "demo.sleep", {"seconds": 60}, max_attempts=1)
    wait_for(in_state(store, task.task_id, S.RUNNING), 15, "RUNNING")
    worker.shutdown()
    back = store.get(task.task_id)
    assert back is not None and (back.state, back.attempts) == (S.QUEUED, 0)

    store.transition(back, S.CANCELLED)  # let the follow-up end quickly
    start_worker()
    wait_for(
        lambda: raw.depth(raw.res.queue_url) == (0, 0), 15, "the message to be consumed", every=0.05
    )
    assert store.get(task.task_id).state == S.CANCELLED  # not DEAD for "attempts exhausted"


@pytest.mark.parametrize(
    ("error", "max_attempts", "outcome"),
    [(PermanentError, 3, S.FAILED), (RuntimeError, 1, S.DEAD)],
)
def test_a_huge_error_message_is_stored_bounded(
    store, queue, start_worker, error, max_attempts, outcome
):
    # 420 KB would push the task item past DynamoDB's 400 KB item limit.
    def explode(ctx: Any, _: Any) -> bytes:
        raise error("x" * 420_000)

    worker = start_worker()
    add_type(worker, "demo.explode", explode)
    task = _enqueue(store, queue, "demo.explode", {}, max_attempts=max_attempts)

    ended = wait_for(in_state(store, task.task_id, outcome), 15, outcome.value)

    assert ended.attempts == 1
    assert len(ended.last_error) <= MAX_ERROR_CHARS
    assert "xxxx" in ended.last_error
    assert ended.last_error.endswith(" characters, truncated]")


def test_a_str_result_is_stored_as_utf8_and_stays_readable(store, queue, start_worker):
    worker = start_worker()
    add_type(worker, "demo.text", lambda ctx, _: "grüß")
    task = _enqueue(store, queue, "demo.text", {})

    done = wait_for(in_state(store, task.task_id, S.SUCCEEDED), 15, "SUCCEEDED")

    assert done.result == "grüß".encode()


def test_a_result_that_is_not_bytes_fails_the_task_and_stores_nothing_unreadable(
    store, queue, start_worker
):
    worker = start_worker()
    add_type(worker, "demo.number", lambda ctx, _: 42)
    task = _enqueue(store, queue, "demo.number", {})

    failed = wait_for(in_state(store, task.task_id, S.FAILED), 15, "FAILED")

    assert "must return a pydantic model, bytes, str or None" in failed.last_error
    assert failed.result == b""


def test_an_effect_attempted_after_cancel_is_refused(store, queue, raw, start_worker):
    started, go, outcome = threading.Event(), threading.Event(), []

    def slow_to_notice(ctx: Any, _: Any) -> bytes:
        started.set()
        go.wait(15)  # ignores ctx.stop, as a handler busy in a library call would
        try:
            outcome.append(ctx.apply_once("charge"))
        except TaskCancelled:
            outcome.append("refused")
            raise
        return b""

    worker = start_worker()
    add_type(worker, "demo.slow", slow_to_notice)
    task = _enqueue(store, queue, "demo.slow", {})
    wait_for(started.is_set, 15, "the handler to start")
    store.cancel(store.get(task.task_id), "cancelled by the client")  # CancelTask returned
    go.set()

    wait_for(lambda: outcome, 15, "the handler's effect attempt")
    assert outcome == ["refused"]
    assert raw.item(f"EFFECT#{task.task_id}", "charge") is None
    wait_for(
        lambda: raw.depth(raw.res.queue_url) == (0, 0), 15, "the message to be deleted", every=0.05
    )
    assert store.get(task.task_id).state == S.CANCELLED


def test_an_external_effect_recorded_then_made_happens_once_across_a_retry(
    store, queue, raw, start_worker, tmp_path, monkeypatch
):
    monkeypatch.setenv(DOWNSTREAM_DIR, str(tmp_path))
    start_worker()
    task = _enqueue(store, queue, "demo.charge", {"fail_after_commit": True, "amount": 5})

    done = wait_for(in_state(store, task.task_id, S.SUCCEEDED), 15, "SUCCEEDED")

    assert done.attempts == 2  # attempt 1 recorded the charge, then failed before making it
    assert json.loads(done.result) == {"charged_now": True}  # made by the retry
    assert [p.name for p in tmp_path.iterdir()] == [f"{task.task_id}:charge"]
    assert json.loads((tmp_path / f"{task.task_id}:charge").read_text()) == {"amount": 5.0}
    owner = raw.item(f"EFFECT#{task.task_id}", "charge")["owner"]
    assert owner.rsplit("/", 2)[1] == "1"  # recorded by attempt 1


def test_an_outcome_whose_write_fails_for_a_while_is_recorded_not_dead_lettered(
    store, queue, raw, start_worker, tmp_path
):
    # Lease 2 s: the outcome write fails for longer than half a lease, and on the last attempt.
    flag = tmp_path / "throttled"

    def succeed_into_throttling(ctx: Any, _: Any) -> bytes:
        flag.touch()
        threading.Timer(3.0, flag.unlink).start()
        return b"done"

    with faults.armed(f"dynamodb.UpdateItem=throttle while={flag}") as plan:
        worker = start_worker()
        add_type(worker, "demo.last", succeed_into_throttling)
        task = _enqueue(store, queue, "demo.last", {}, max_attempts=1)
        # Raw reads: the store's own breaker opens under the throttling, as it should.
        final = wait_for(
            lambda: (item := raw.task_item(task.task_id))["state"] in TERMINAL_STATES and item,
            40,
            "a terminal state",
        )

    assert plan.rules[0].hits > 0  # the fault did happen
    assert (final["state"], final["attempts"]) == ("SUCCEEDED", 1)
    assert bytes(final["result"]) == b"done"
    assert raw.depth(raw.res.dlq_url) == (0, 0)  # not dead-lettered


def test_a_hung_lease_call_does_not_let_the_message_be_delivered_again(
    store, queue, raw, start_worker
):
    # Visibility 5 s, lease 2 s, beats every 0.5 s. Every lease extension hangs for 6 s, past
    # the 5 s read timeout: the message must still be kept invisible, so that no second
    # delivery runs the task while its first run is going on.
    executions: list[int] = []

    def count_and_work(ctx: Any, _: Any) -> bytes:
        executions.append(ctx.attempt)
        ctx.wait(7)
        return b"done"

    # skip=1: the claim (the first UpdateItem) goes through; the beats after it hang.
    with faults.armed("dynamodb.UpdateItem=hang seconds=6 for=9 skip=1"):
        worker = start_worker()
        add_type(worker, "demo.long", count_and_work)
        task = _enqueue(store, queue, "demo.long", {})
        final = wait_for(
            lambda: (item := raw.task_item(task.task_id))["state"] in TERMINAL_STATES and item,
            40,
            "a terminal state",
        )

    assert executions == [1]  # one run; no redelivery took it over
    assert (final["state"], final["attempts"]) == ("SUCCEEDED", 1)


def test_a_worker_that_loses_its_messages_visibility_gives_the_task_back(
    store, queue, raw, start_worker
):
    # SQS refuses visibility extensions for longer than the 5 s visibility timeout. On AWS the
    # worker's receipt handle is then dead: it stops and gives the task back, without using up
    # an attempt, and the next delivery runs it to the end.
    runs: list[int] = []

    def long_once(ctx: Any, _: Any) -> bytes:
        runs.append(ctx.attempt)
        if len(runs) == 1:
            ctx.wait(30)
        return b"done"

    with faults.armed("sqs.ChangeMessageVisibility=down for=6"):
        worker = start_worker(heartbeat_interval_seconds=0.5, lease_seconds=2)
        add_type(worker, "demo.long", long_once)
        task = _enqueue(store, queue, "demo.long", {}, max_attempts=1)
        done = wait_for(in_state(store, task.task_id, S.SUCCEEDED), 40, "SUCCEEDED")

    assert runs == [1, 1]  # stopped, then run again as the same (uncounted) attempt
    assert done.attempts == 1
    assert any("lost its message's visibility" in e.detail for e in done.events)


def test_shutdown_hands_back_every_unfinished_task_at_once(
    store, queue, raw, start_worker, tmp_path
):
    flag = tmp_path / "slow"
    worker = start_worker(worker_concurrency=4, shutdown_grace_seconds=1.5)
    tasks = [submit(store, payload=b'{"seconds": 60}') for _ in range(4)]
    for n, task in enumerate(tasks):  # a message group each, so that all four run at once
        queue.send(task.task_id, task.task_type, group_id=f"demo.sleep#{n}")
    for task in tasks:
        wait_for(in_state(store, task.task_id, S.RUNNING), 20, "RUNNING")

    # Each hand-back's read takes 0.45 s: one after another, four would take 1.8 s. (Reads,
    # not writes: the lease heartbeats are updates too, and would time out and open the breaker.)
    with faults.armed(f"dynamodb.Query=hang seconds=0.45 while={flag}"):
        flag.touch()
        started = time.monotonic()
        worker.shutdown()
        took = time.monotonic() - started

    assert took < 1.5 + 1.2  # the grace, then the hand-backs side by side
    for task in tasks:
        back = store.get(task.task_id)
        assert (back.state, back.attempts, back.lease_owner) == (S.QUEUED, 0, "")


def test_bounces_do_not_use_up_the_receives_a_task_needs_for_its_attempts(
    store, queue, raw, start_worker
):
    # Another worker holds a live lease, then dies. The message has been received as often as
    # the redrive policy allows: bouncing it once more would send it to the DLQ with the task
    # RUNNING and attempts left.
    task = submit(store, payload=b'{"seconds": 0}', max_attempts=3)
    running = store.transition(
        task,
        S.RUNNING,
        via=S.QUEUED,
        set_values={"attempts": 1, "lease_owner": "gone/m/1", "lease_expires_at": now_ms() + 3000},
    )
    queue.send(task.task_id, task.task_type, tenant=task.tenant)
    max_receives = raw_redrive_max_receives(raw)
    for _ in range(max_receives - 1):
        assert raw.receive(raw.res.queue_url), "the message is there to be received"

    start_worker()  # its receive is the last one allowed; it finds the live lease and bounces

    done = wait_for(in_state(store, running.task_id, S.SUCCEEDED), 30, "SUCCEEDED")
    assert done.attempts == 2  # taken over after the lease ran out
    assert raw.depth(raw.res.dlq_url) == (0, 0)


def raw_redrive_max_receives(raw) -> int:
    attrs = raw.sqs.get_queue_attributes(QueueUrl=raw.res.queue_url, AttributeNames=["All"])
    return int(json.loads(attrs["Attributes"]["RedrivePolicy"])["maxReceiveCount"])


def test_a_first_delivery_with_its_snapshot_is_claimed_and_run_without_a_read(
    store, queue, raw, start_worker
):
    task = submit(store, task_type="demo.noop")
    queue.send(task.task_id, task.task_type, tenant=task.tenant, snapshot=task)
    reads = ddb_calls("GetItem") + ddb_calls("Query")
    start_worker()
    wait_for(
        lambda: (raw.task_item(task.task_id) or {}).get("state") == "SUCCEEDED", 15, "SUCCEEDED"
    )
    assert ddb_calls("GetItem") + ddb_calls("Query") == reads
    done = store.get(task.task_id)
    assert done is not None and _path(done) == [
        (None, S.PENDING),
        (S.PENDING, S.QUEUED),
        (S.QUEUED, S.RUNNING),
        (S.RUNNING, S.SUCCEEDED),
    ]


def test_a_stale_snapshot_fails_the_claim_and_the_task_is_read(store, queue, raw, start_worker):
    task = submit(store, task_type="demo.noop")
    queue.send(task.task_id, task.task_type, tenant=task.tenant, snapshot=task)
    store.transition(task, S.CANCELLED, detail="cancelled before any worker saw it")
    start_worker()
    wait_for(
        lambda: raw.depth(raw.res.queue_url) == (0, 0), 15, "the message to be deleted", every=0.05
    )
    final = store.get(task.task_id)
    assert final is not None and (final.state, final.attempts) == (S.CANCELLED, 0)
    assert S.RUNNING not in [e.to_state for e in final.events]


# ---- leases are fencing tokens (issue 14) ----
# A run's lease is its own: a second run of the same task by the same worker, of the same
# message, as the same (refunded) attempt holds a different lease, so the ledger tells the two
# runs apart and nothing the first run still writes passes the second run's fence.


class _Runs:
    """A handler that records `charge` on every run, and blocks its first run until stopped
    and its second until `finish` is set. Each run's context is kept, so the test can write
    with the first run's lease once the second holds the task (a zombie: a thread the first
    run left behind, or a stalled process that wakes up)."""

    def __init__(self) -> None:
        self.contexts: list[Any] = []
        self.applied: list[bool] = []
        self.second_running = threading.Event()
        self.finish = threading.Event()

    def __call__(self, ctx: Any, _: Any) -> bytes:
        self.contexts.append(ctx)
        self.applied.append(ctx.apply_once("charge"))
        if len(self.contexts) == 1:
            ctx.wait(60)  # stopped: visibility lost, or the worker shuts down
        else:
            self.second_running.set()
            self.finish.wait(30)
        return b"done"


def _assert_the_first_runs_writes_are_refused(store, runs: _Runs, task_id: str) -> None:
    first, second = runs.contexts
    assert first.owner != second.owner
    assert store.extend_lease(task_id, first.owner, now_ms() + 60_000) is False
    with pytest.raises(TaskCancelled):
        first.apply_once("refund")
    current = store.get(task_id)
    assert current is not None and current.state == S.RUNNING
    with pytest.raises(Conflict):  # a completion with the first run's lease
        store.transition(current, S.SUCCEEDED, remove=LEASE, lease_owner=first.owner)


def test_a_run_after_a_lost_visibility_give_back_holds_a_lease_of_its_own(
    store, queue, raw, start_worker
):
    # The same worker receives the same message again after it gave the task back (the
    # attempt refunded, so the same attempt number): its second run must not pass as the first.
    runs = _Runs()
    with faults.armed("sqs.ChangeMessageVisibility=down for=6"):
        worker = start_worker(heartbeat_interval_seconds=0.5, lease_seconds=2)
        add_type(worker, "demo.runs", runs)
        task = _enqueue(store, queue, "demo.runs", {}, max_attempts=1)
        wait_for(runs.second_running.is_set, 40, "the second run")

    try:
        assert runs.applied == [True, False]  # the charge is applied once
        _assert_the_first_runs_writes_are_refused(store, runs, task.task_id)
    finally:
        runs.finish.set()
    done = wait_for(in_state(store, task.task_id, S.SUCCEEDED), 20, "SUCCEEDED")

    assert [c.attempt for c in runs.contexts] == [1, 1]
    assert raw.item(f"EFFECT#{task.task_id}", "refund") is None
    assert done.effects_applied == 1
    assert any("lost its message's visibility" in e.detail for e in done.events)


def test_a_worker_restarted_under_the_same_id_holds_a_lease_of_its_own(
    store, queue, raw, start_worker
):
    # A SIGTERM hand-back, then a worker with the same id (hostname-pid: a container restarted
    # in place often gets the same pid) receives the same message as the same attempt.
    runs = _Runs()
    first = start_worker(worker_id="w-same", shutdown_grace_seconds=1.5)
    add_type(first, "demo.runs", runs)
    task = _enqueue(store, queue, "demo.runs", {}, max_attempts=1)
    wait_for(lambda: runs.applied, 15, "the first run's effect")
    first.shutdown()
    back = store.get(task.task_id)
    assert back is not None and (back.state, back.attempts) == (S.QUEUED, 0)

    second = start_worker(worker_id="w-same")
    add_type(second, "demo.runs", runs)
    wait_for(runs.second_running.is_set, 20, "the second run")

    try:
        assert runs.applied == [True, False]  # the charge is applied once
        _assert_the_first_runs_writes_are_refused(store, runs, task.task_id)
    finally:
        runs.finish.set()
    done = wait_for(in_state(store, task.task_id, S.SUCCEEDED), 20, "SUCCEEDED")

    assert [c.attempt for c in runs.contexts] == [1, 1]
    assert raw.item(f"EFFECT#{task.task_id}", "refund") is None
    assert done.effects_applied == 1
    assert [e.detail for e in done.events if e.to_state == S.RUNNING] == ["claimed by w-same"] * 2


def test_a_claim_whose_answer_is_lost_still_runs_its_attempt(
    store, queue, raw, settings, start_worker
):
    # The claim lands; its answer, and those of botocore's retries (which meet the claim and
    # fail their condition), are lost. The worker must find out that the claim is its own and
    # run the task, not leave it RUNNING under a lease nobody extends: the next delivery would
    # take it over as attempt 2, and on a task's last attempt end it DEAD with no run at all.
    runs: list[int] = []

    def count(ctx: Any, _: Any) -> bytes:
        runs.append(ctx.attempt)
        return b"done"

    task = _enqueue(store, queue, "demo.count", {}, max_attempts=1)
    with faults.armed(f"dynamodb.UpdateItem=lost count={settings.aws_max_attempts}") as plan:
        worker = start_worker()
        add_type(worker, "demo.count", count)
        final = wait_for(
            lambda: (item := raw.task_item(task.task_id))["state"] in TERMINAL_STATES and item,
            30,
            "a terminal state",
        )

    assert plan.rules[0].hits == settings.aws_max_attempts  # every try of the claim lost
    assert (final["state"], final["attempts"], runs) == ("SUCCEEDED", 1, [1])
    assert raw.depth(raw.res.dlq_url) == (0, 0)


def test_visibility_losses_do_not_use_up_the_receives_a_task_needs_for_its_attempts(
    store, queue, raw, settings, start_worker, tmp_path
):
    # Each lost visibility costs the message a receive, and the give-back refunds the attempt.
    # This message has been received one short of the redrive policy's limit, as if earlier
    # runs had lost it that often (raw receives stand in for them). Lost once more, its next
    # receive would move it to the DLQ, and the compensator would mark DEAD a task that still
    # has its attempt.
    flag = tmp_path / "sqs-down"
    runs: list[int] = []

    def long_once(ctx: Any, _: Any) -> bytes:
        runs.append(ctx.attempt)
        if len(runs) == 1:
            try:
                ctx.wait(30)
            finally:
                flag.unlink()  # stopped: SQS is back
        return b"done"

    task = _enqueue(store, queue, "demo.long", {}, max_attempts=1)
    for _ in range(raw_redrive_max_receives(raw) - 1):
        assert raw.receive(raw.res.queue_url), "the message is there to be received"
    relay = relay_on(settings, store, queue)

    def ended() -> dict[str, Any] | None:
        relay.compensate_dlq()  # the relay's DLQ compensator, every poll
        item = raw.task_item(task.task_id)
        return item if item["state"] in TERMINAL_STATES else None

    flag.touch()
    with faults.armed(f"sqs.ChangeMessageVisibility=down while={flag}"):
        worker = start_worker(heartbeat_interval_seconds=0.5, lease_seconds=2)
        add_type(worker, "demo.long", long_once)
        final = wait_for(ended, 40, "a terminal state", every=0.25)

    assert (final["state"], final["attempts"], runs) == ("SUCCEEDED", 1, [1, 1])
    assert any("lost its message's visibility" in e["d"] for e in final["history"])
    assert raw.depth(raw.res.dlq_url) == (0, 0)


# ---- per-type policy (conveyor.tasks.registry) ----


def test_a_handler_past_its_timeout_is_abandoned_and_its_late_writes_are_refused(
    store, queue, raw, start_worker
):
    contexts: list[Any] = []
    release, second_running, finish = threading.Event(), threading.Event(), threading.Event()
    late: list[object] = []

    def stuck(ctx: Any, _: Any) -> bytes:
        contexts.append(ctx)
        if len(contexts) == 1:
            release.wait(60)  # ignores ctx.stop, as a handler stuck in a library call would
            try:
                late.append(ctx.apply_once("late"))
            except TaskCancelled:
                late.append("refused")
            return b"late"
        second_running.set()
        finish.wait(60)
        return b"second"

    worker = start_worker(worker_concurrency=1)  # one slot: the retry needs the stuck run's
    add_type(worker, "demo.stuck", stuck, timeout="1s")
    task = _enqueue(store, queue, "demo.stuck", {}, max_attempts=2)
    try:
        wait_for(second_running.is_set, 30, "the retry, in the slot the stuck run held")
        first, second = contexts
        assert first.stop.is_set()  # a cooperative handler would have stopped
        # The abandoned run's heartbeat, effect and completion all fail the lease fence.
        assert store.extend_lease(task.task_id, first.owner, now_ms() + 60_000) is False
        release.set()
        wait_for(lambda: late, 20, "the stuck run's late effect")
        assert late == ["refused"]
        assert raw.item(f"EFFECT#{task.task_id}", "late") is None
        current = store.get(task.task_id)
        assert current is not None and current.lease_owner == second.owner
        with pytest.raises(Conflict):
            store.transition(current, S.SUCCEEDED, remove=LEASE, lease_owner=first.owner)
    finally:
        release.set()
        finish.set()
    done = wait_for(in_state(store, task.task_id, S.SUCCEEDED), 20, "SUCCEEDED")
    assert (done.attempts, done.result) == (2, b"second")
    assert any("ran past its 1 s timeout" in e.detail for e in done.events)


def test_a_timeout_on_the_last_attempt_ends_the_task_dead(store, queue, start_worker):
    hold = threading.Event()
    worker = start_worker()
    add_type(worker, "demo.stuck", lambda ctx, _: hold.wait(60), timeout="500ms")
    task = _enqueue(store, queue, "demo.stuck", {}, max_attempts=1)
    try:
        dead = wait_for(in_state(store, task.task_id, S.DEAD), 30, "DEAD")
    finally:
        hold.set()
    assert "HandlerTimeout: the handler ran past its 0.5 s timeout" in dead.last_error


def test_a_type_s_permanent_errors_fail_the_task_at_once(store, queue, start_worker):
    def invalid(ctx: Any, _: Any) -> bytes:
        raise LookupError("no such customer")

    worker = start_worker()
    add_type(worker, "demo.lookup", invalid, permanent=(LookupError,))
    task = _enqueue(store, queue, "demo.lookup", {}, max_attempts=3)

    failed = wait_for(in_state(store, task.task_id, S.FAILED), 20, "FAILED")
    assert (failed.attempts, failed.last_error) == (1, "LookupError: no such customer")


def test_a_type_s_concurrency_caps_its_runs_in_flight_per_worker(store, queue, start_worker):
    lock = threading.Lock()
    running: list[str] = []
    most = [0]
    overlap = threading.Event()

    def crowded(ctx: Any, _: Any) -> bytes:
        with lock:
            running.append(ctx.task.task_id)
            most[0] = max(most[0], len(running))
            if len(running) > 1:
                overlap.set()
        overlap.wait(2)  # a run waits a while for company: with no cap it would find some
        with lock:
            running.remove(ctx.task.task_id)
        return b""

    declared = declare("demo.crowded", crowded, payload=NoParams, concurrency=1)
    start_worker(worker_concurrency=3, types={**DEMO, "demo.crowded": declared})
    tasks = [_enqueue(store, queue, "demo.crowded", {}) for _ in range(3)]

    for task in tasks:
        done = wait_for(in_state(store, task.task_id, S.SUCCEEDED), 60, "SUCCEEDED")
        assert done.attempts == 1  # a message sent back at the cap costs no attempt
    assert most[0] == 1


def test_a_type_s_backoff_replaces_the_worker_s(store, queue, start_worker):
    # The worker's own backoff would hold the retry for up to 100 s; the type's cap of 0.4 s
    # rounds every delay to 0 s (the visibility timeout takes whole seconds).
    def once(ctx: Any, _: Any) -> bytes:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return b"ok"

    declared = declare(
        "demo.quick", once, payload=NoParams, backoff=Backoff(base="0.1s", cap="0.4s")
    )
    start_worker(
        backoff_base_seconds=100, backoff_max_seconds=100, types={**DEMO, "demo.quick": declared}
    )
    task = _enqueue(store, queue, "demo.quick", {})

    done = wait_for(in_state(store, task.task_id, S.SUCCEEDED), 30, "SUCCEEDED")
    assert any(e.detail.startswith("retry in 0s") for e in done.events)


def test_a_queued_payload_that_no_longer_fits_its_model_fails_permanently(
    store, queue, start_worker
):
    start_worker()
    task = _enqueue(store, queue, "demo.sleep", {"seconds": "soon"}, max_attempts=3)

    failed = wait_for(in_state(store, task.task_id, S.FAILED), 20, "FAILED")
    assert failed.attempts == 1
    assert failed.last_error.startswith("payload does not fit Sleep: 1 validation error")


# Heartbeats every 2 s: a prefetched message may wait up to 1 s at the slots' pace.
PREFETCHING = {
    "heartbeat_interval_seconds": 2,
    "lease_seconds": 6,
    "visibility_timeout_seconds": 30,
}


def _receives() -> float:
    return metric(
        "conveyor_aws_requests_total", service="sqs", operation="ReceiveMessage", outcome="success"
    )


def _send_in_groups(queue, tasks: list[Task]) -> None:
    for n, task in enumerate(tasks):  # a group each: FIFO may hand out all of them at once
        queue.send(task.task_id, task.task_type, group_id=f"{task.task_type}#{n}")


def test_a_worker_behind_on_its_queue_receives_full_batches(store, queue, start_worker):
    """2 slots: asking only for the free slots took 2 messages a receive (40 tasks: 20 or
    more receives, 40 or more requests); the prefetch asks for 10 once the slots' pace is known.
    Each receive of the default lane's messages costs one more, empty, short poll of the high
    lane's queue before it (conveyor.worker.lanes), hence two requests per receive."""
    start_worker(worker_concurrency=2, **PREFETCHING)
    first = submit(store, task_type="demo.noop")
    _send_in_groups(queue, [first])
    wait_for(in_state(store, first.task_id, S.SUCCEEDED), 20, "the first task")  # pace known
    before = _receives()
    tasks = [submit(store, task_type="demo.noop") for _ in range(40)]
    _send_in_groups(queue, tasks)
    for task in tasks:
        wait_for(in_state(store, task.task_id, S.SUCCEEDED), 60, "SUCCEEDED")
    receives = _receives() - before
    assert receives <= 2 * 40 / 4, receives


def test_shutdown_gives_back_the_prefetched_messages(store, queue, raw, start_worker):
    """One slot busy, three messages waiting for it: a shutdown hands back the running task
    and releases the waiting ones unclaimed, all visible at once (not after 30 s)."""
    worker = start_worker(worker_concurrency=1, shutdown_grace_seconds=0.5, **PREFETCHING)
    first = submit(store, task_type="demo.noop")
    _send_in_groups(queue, [first])
    wait_for(in_state(store, first.task_id, S.SUCCEEDED), 20, "the first task")  # pace known
    wait_for(lambda: raw.depth(raw.res.queue_url) == (0, 0), 20, "its message deleted")
    tasks = [submit(store, payload=b'{"seconds": 60}') for _ in range(4)]
    _send_in_groups(queue, tasks)
    wait_for(lambda: raw.depth(raw.res.queue_url) == (0, 4), 20, "all four received")

    def running() -> int:
        return sum(store.get(t.task_id).state == S.RUNNING for t in tasks)

    wait_for(lambda: running() == 1, 20, "one task RUNNING")
    assert running() == 1  # the other three wait in the prefetch, unclaimed

    worker.shutdown()

    assert raw.depth(raw.res.queue_url) == (4, 0)
    for task in tasks:
        back = store.get(task.task_id)
        assert back.attempts == 0 and back.lease_owner == ""


def test_a_task_started_in_time_and_handed_back_after_its_start_by_runs_again(
    store, queue, start_worker
):
    """start_by bounds a task's start. One that started in time and was handed back by a
    shutdown (its attempt refunded) is not a task that never started: the next worker runs it
    instead of recording EXPIRED over the work begun."""
    start_by = now_ms() + 3000
    task = store.submit(
        tenant="acme",
        task_type="demo.sleep",
        payload=json.dumps({"seconds": 60}).encode(),
        idempotency_key=uuid.uuid4().hex,
        request_hash="h",
        max_attempts=3,
        start_by_ms=start_by,
    ).task
    queue.send(task.task_id, task.task_type, tenant=task.tenant)
    worker = start_worker(shutdown_grace_seconds=1.5)
    running = wait_for(in_state(store, task.task_id, S.RUNNING), 15, "RUNNING")
    assert running.events[-1].at_ms < start_by  # started in time
    wait_for(lambda: now_ms() > start_by, 10, "the start_by to pass", every=0.05)
    worker.shutdown()
    assert store.get(task.task_id).state == S.QUEUED  # handed back

    start_worker()
    again = wait_for(
        lambda: (t := store.get(task.task_id)) is not None and t.state != S.QUEUED and t,
        15,
        "the next worker to take it",
    )

    assert again.state == S.RUNNING, again.events[-1]


_SEEN_BY_AN_EARLIER_RUN: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "seen", default=None
)


def test_runs_reuse_a_thread_per_slot_each_in_a_context_of_its_own(store, queue, start_worker):
    """No thread is started per message (issue 18's CPU cut): the runs go to one runner thread
    per slot, and what a run leaves in its context (a trace span, say) is not the next one's
    (seen failing with the runs on the runner's own context)."""
    lock = threading.Lock()
    runs: list[tuple[str, str | None]] = []

    def where(ctx: Any, _: Any) -> bytes:
        with lock:
            runs.append((threading.current_thread().name, _SEEN_BY_AN_EARLIER_RUN.get()))
        _SEEN_BY_AN_EARLIER_RUN.set(ctx.task.task_id)
        return b""

    declared = declare("demo.where", where, payload=NoParams)
    start_worker(worker_concurrency=2, types={**DEMO, "demo.where": declared})
    tasks = [_enqueue(store, queue, "demo.where", {}) for _ in range(6)]
    for task in tasks:
        wait_for(in_state(store, task.task_id, S.SUCCEEDED), 60, "SUCCEEDED")
    assert len(runs) == 6
    assert {name for name, _ in runs} <= {"runner-0", "runner-1"}
    assert [seen for _, seen in runs] == [None] * 6


def test_a_message_an_open_long_poll_brings_while_every_slot_is_busy_is_released_at_once(
    store, queue, raw, start_worker
):
    """Idle, the worker long-polls both lanes; a default task fills its only slot, and the
    high lane's long poll, still open, then brings a high task. With no room for it, it must
    be visible again at once to the other workers, not held for the long task's 40 s."""
    receives = {"service": "sqs", "operation": "ReceiveMessage", "outcome": "success"}
    before = metric("conveyor_aws_requests_total", **receives)
    start_worker(
        worker_concurrency=1,
        poll_wait_seconds=20,
        visibility_timeout_seconds=60,
        heartbeat_interval_seconds=10,
        lease_seconds=30,
    )
    # Its first short polls of both lanes came back empty: it is long-polling both now.
    wait_for(
        lambda: metric("conveyor_aws_requests_total", **receives) >= before + 2,
        15,
        "the worker's first, empty, short polls",
        every=0.05,
    )
    long = _enqueue(store, queue, "demo.sleep", {"seconds": 40})
    wait_for(in_state(store, long.task_id, S.RUNNING), 15, "the long task RUNNING")
    high_received = {"queue": "main", "lane": "high"}
    received = metric("conveyor_sqs_messages_received_total", **high_received)
    high = submit(store, lane="high")
    queue.send(high.task_id, high.task_type, tenant=high.tenant, lane="high")
    wait_for(
        lambda: metric("conveyor_sqs_messages_received_total", **high_received) > received,
        10,
        "the worker's open long poll to receive the high message",
        every=0.05,
    )
    high_url = raw.res.lane_urls["high"][0]
    wait_for(lambda: raw.depth(high_url) == (1, 0), 10, "the high message visible", every=0.05)
    assert store.get(high.task_id).state != S.RUNNING
