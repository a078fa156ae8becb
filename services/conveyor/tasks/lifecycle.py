"""Every way a task moves, each owning its store write and its queue side effect, in the one
order that survives a crash. The API, worker, relay and operator commands drive these; none of
them writes a task or settles its message otherwise.

Each transition's steps, in order, with the failpoint at each step boundary in brackets
(conveyor.failpoints; tests/chaos kills a process at each): what a SIGKILL after a step
leaves behind, and who finishes it.

submit       [api.before_commit] 1 commit the task PENDING with its outbox mark, its PAYLOAD
             item and idempotency record [api.after_commit] 2 send its message, carrying the
             committed task [api.after_send].
             Before 1: nothing; the client retries with its key. After 1: PENDING with a
             mark and no message: the relay enqueues it once the mark is stale. After 2: the
             claim records QUEUED on its way and clears the mark (the relay may re-send,
             deduplicated by SQS, and record QUEUED first).
             A delayed task (not_before ahead) is committed with a due mark dated then and
             no send: the relay enqueues it when it is due, as below.
enqueue      (the relay's, for a stale or due mark; a redrive's) 1 send, with the submit's
             dedup id [enqueue.after_send] 2 QUEUED, clearing the mark. (Due marks go in
             batches, enqueue_many: a batch of ten sent, [enqueue.after_send], then each QUEUED.)
             After 1: the mark stays: the relay sends again (deduplicated) and records
             QUEUED, or the claim clears it.
expire       (the relay's, for a mark past its task's start_by; the worker's, for a message
             whose task was never started and is past it) 1 EXPIRED, clearing the mark, if its
             handler recorded no effect 2 (worker) delete the message.
             After 1: the message returns, finds the task terminal, and goes.
claim        [worker.after_receive] 1 RUNNING under a new lease, attempts + 1
             [worker.after_claim].
             After 1: the lease lapses and the message returns at its visibility timeout:
             the next claim takes over as the next attempt (the dead run counts).
complete,    1 SUCCEEDED (FAILED) under the lease [worker.after_complete] 2 delete the
fail         message. After 1: the message returns, finds the task terminal, and goes.
retry        1 QUEUED with the error, under the lease 2 delay the message by the back-off.
             After 1: the message returns at its visibility timeout, not after the
             back-off, and is claimed as the next attempt.
give_back,   1 QUEUED under the lease, the attempt refunded 2 (hand_back) the message
hand_back    visible now, or replaced if its receives run short (return_message).
             After 1: the message returns at its visibility timeout, for the refunded
             attempt.
dead_letter, 1 DEAD (under the lease when a run ends so) [dead_letter.after_dead] 2 a DLQ
compensate   message in the task's own group, deduplicated by the DEAD version 3 delete
             the message it came from (dead_letter: the main queue's; compensate: the one
             the redrive policy moved to the DLQ).
             After 1 or 2: that message returns (to the worker's next receive, or the
             relay's next DLQ scan), finds the task DEAD, files it (2 again: deduplicated)
             and goes (finished_with). So a DEAD task has its DLQ message once the message
             it came from is gone, whichever process did it.
redrive      1 DEAD -> PENDING, attempts reset, outbox mark [redrive.after_pending]
             2 enqueue [redrive.after_send] 3 delete the DLQ message.
             After 1: the relay enqueues the marked task. After 1 or 2: the DLQ message
             returns when the redrive's hold ends; the operator's next redrive skips it
             while the task runs and discards it once the task is terminal.
cancel       1 CANCELLED, if its handler recorded no effect. The run's next heartbeat (or
             the next claim) meets it: the handler stops and the message goes.
record_effect  1 one transaction: the effect counted on the task item under the lease, and
             its ledger item. A re-try whose answer was lost asks the ledger whose it is.

A write "under the lease" is conditional on the run's lease owner (a token unique to its claim)
and fails with Conflict (or LeaseLost) once the task was cancelled or taken over: its run then
settles nothing but the message of a task that was cancelled.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pybreaker
import tenacity
from opentelemetry import propagate, trace

from conveyor import failpoints
from conveyor.aws import is_dependency_fault
from conveyor.domain import DEFAULT_LANE, MAX_RECEIVE_COUNT, Task, TaskState
from conveyor.queue import QUEUE_MAIN, Message, QueueId, TaskQueue, enqueue_dedup_id
from conveyor.store import (
    LEASE_ATTRIBUTES,
    Conflict,
    IdempotencyMismatch,
    NewTask,
    SubmitResult,
    TaskStore,
    now_ms,
)
from conveyor.tasks import codec
from conveyor.telemetry import metrics

log = logging.getLogger("conveyor.tasks")
tracer = trace.get_tracer("conveyor.tasks")

S = TaskState
_ATTEMPTS, _ERROR, _RESULT = (codec.attr(f) for f in ("attempts", "last_error", "result"))
_OWNER, _EXPIRES = LEASE_ATTRIBUTES

# enqueue_many's batches: BatchGetItem reads at most 100 keys, SendMessageBatch sends 10.
READ_BATCH, SEND_BATCH = 100, 10
# A map (the builtin, or a thread pool's) over batches of tasks.
Mapper = Callable[
    [Callable[[list[Task]], dict[str, bool | None]], Iterable[list[Task]]],
    Iterable[dict[str, bool | None]],
]

# The error of a task whose message the queue's redrive policy moved to the DLQ.
REDRIVE_POLICY_ERROR = "redrive policy: too many receives"


def lease_token(worker_id: str, attempt: int) -> str:
    """A claim's lease owner: the fencing token every later write of that run is conditional
    on (heartbeat, effect, outcome, give-back). Unique per claim, never rebuilt from the task or
    the message: a give-back refunds the attempt, so the same worker receiving the same message
    again (or a worker restarted under the same id) would otherwise hold the same lease as the
    run before it, and pass that run's fence. The worker id and attempt are there to be read."""
    return f"{worker_id}/{attempt}/{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Run:
    """A claimed task, the message it was claimed from, and the claim's lease owner."""

    task: Task
    message: Message
    owner: str


def _once(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def _receives_cover(message: Message, attempts_left: int) -> bool:
    """Whether `message` has receives left under the queue's redrive policy for the task's
    attempts left, with one to spare for a run that loses the message's visibility (which
    costs a receive and no attempt)."""
    return message.receive_count + attempts_left < MAX_RECEIVE_COUNT


def _delayed(task: Task) -> bool:
    return task.not_before_ms > task.created_at_ms


def _via(task: Task) -> TaskState | None:
    """A task still PENDING had its message on the queue: the history records QUEUED too."""
    return S.QUEUED if task.state == S.PENDING else None


class Lifecycle:
    """The transitions. `settle` deletes a main-queue message whose task is finished with (the
    worker batches its deletes); by default, at once."""

    def __init__(
        self,
        store: TaskStore,
        queue: TaskQueue,
        settle: Callable[[Message], None] | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self._settle = settle or (
            lambda message: queue.delete(message.receipt_handle, queue=message.queue)
        )

    # ---- submit, and the relay that finishes it ----
    def submit(
        self,
        *,
        tenant: str,
        task_type: str,
        payload: bytes,
        idempotency_key: str,
        request_hash: str,
        max_attempts: int,
        remaining: float | None,
        send_budget: Callable[[], float],
        not_before_ms: int = 0,
        start_by_ms: int = 0,
        lane: str = DEFAULT_LANE,
    ) -> SubmitResult:
        """submit_many of one task; IdempotencyMismatch raised."""
        new = NewTask(
            tenant=tenant,
            task_type=task_type,
            payload=payload,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            max_attempts=max_attempts,
            not_before_ms=not_before_ms,
            start_by_ms=start_by_ms,
            lane=lane,
        )
        [result] = self.submit_many([new], remaining=remaining, send_budget=send_budget)
        if isinstance(result, IdempotencyMismatch):
            raise result
        return result

    def submit_many(
        self,
        new: Sequence[NewTask],
        *,
        remaining: float | None,
        send_budget: Callable[[], float],
    ) -> list[SubmitResult | IdempotencyMismatch]:
        """Commit the tasks (PENDING, with their outbox marks; TaskStore.submit_many), then send
        the message of each created one, carrying the committed task. A send is best effort:
        on any failure the mark stays and the relay sends it. No write follows the send: the
        claim clears the mark and records QUEUED on its way to RUNNING, which saves a write per
        task; the price is that the relay re-sends (deduplicated) a task still waiting after
        CONVEYOR_OUTBOX_AGE_SECONDS, and marks it QUEUED. A delayed task gets no send: the
        relay sends it when it is due. `send_budget()`: seconds a send may take, asked once the
        commit is done. The tasks keep the current trace context, so a relayed send continues
        the trace."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        traced = [replace(n, traceparent=carrier.get("traceparent", "")) for n in new]
        failpoints.hit("api.before_commit")
        results = self.store.submit_many(traced, remaining=remaining)
        created = [
            r.task
            for r in results
            if isinstance(r, SubmitResult) and r.created and not _delayed(r.task)
        ]
        if created:
            failpoints.hit("api.after_commit")
        for task in created:
            try:
                self.queue.send(
                    task.task_id,
                    task.task_type,
                    tenant=task.tenant,
                    lane=task.lane,
                    dedup_id=enqueue_dedup_id(task),
                    snapshot=task,
                    remaining=send_budget(),
                )
                failpoints.hit("api.after_send")
            except Exception:
                log.warning(
                    "send after commit failed; the outbox relay will send it",
                    exc_info=True,
                    extra={"task_id": task.task_id},
                )
        return results

    def enqueue(self, task_id: str, detail: str = "sent by the outbox relay") -> bool:
        """The relay's half of submit, for a task whose outbox mark is stale or due: send its
        message (the submit's dedup id: a send that did land collapses) and record QUEUED.
        False if the task is gone or no longer PENDING (its mark went with its claim or
        cancel), or past its start_by (then it expires instead)."""
        task = self.store.get(task_id)
        if task is None or task.state != S.PENDING:
            return False
        if task.expired_at(now_ms()):
            with contextlib.suppress(Conflict):
                self.expire(task)
            return False
        self._send_and_queue(task, detail, task.traceparent)
        return True

    def enqueue_many(
        self, task_ids: Sequence[str], detail: str, run: Mapper = map
    ) -> dict[str, bool | None]:
        """`enqueue` of many tasks in fewer requests: their task items read a hundred at a
        time (TaskStore.get_many), their messages sent ten at a time (TaskQueue.send_refs),
        then each one's QUEUED write; the same order and the same dedup ids, so a crash
        anywhere leaves what `enqueue` would. `run` maps the batches of ten (a thread pool's
        map runs them side by side); the batches come from a generator that reads the next
        hundred only when `run` asks for more, so a pool's map (which submits each batch as it
        gets it) sends the first ten while the rest are read. Per task: True if sent, False if
        there was nothing to send (gone, no longer PENDING, or expired instead), None if its
        read, send or write failed: its mark stays for the next try, and the others go on
        without it."""
        outcomes: dict[str, bool | None] = {}

        def batches() -> Iterator[list[Task]]:
            for start in range(0, len(task_ids), READ_BATCH):
                ids = task_ids[start : start + READ_BATCH]
                try:
                    tasks = self.store.get_many(ids)
                except Exception:
                    log.exception("reading tasks to enqueue failed; their marks stay")
                    outcomes.update(dict.fromkeys(ids, None))
                    continue
                pending = []
                for task_id in ids:
                    task = tasks.get(task_id)
                    if task is None or task.state != S.PENDING:
                        outcomes[task_id] = False
                    else:
                        pending.append(task)
                for i in range(0, len(pending), SEND_BATCH):
                    yield pending[i : i + SEND_BATCH]

        for done in run(lambda batch: self._enqueue_batch(batch, detail), batches()):
            outcomes.update(done)
        return outcomes

    def _enqueue_batch(self, tasks: list[Task], detail: str) -> dict[str, bool | None]:
        """enqueue_many's steps for up to SEND_BATCH PENDING tasks: expire those past their
        start_by, send the rest in one request, then record each sent one QUEUED."""
        outcomes: dict[str, bool | None] = {}
        now = now_ms()
        send = []
        for task in tasks:
            if not task.expired_at(now):
                send.append(task)
                continue
            try:
                with contextlib.suppress(Conflict):
                    self.expire(task)
                outcomes[task.task_id] = False
            except Exception:
                log.exception("expiring a task failed", extra={"task_id": task.task_id})
                outcomes[task.task_id] = None
        if not send:
            return outcomes
        try:
            refused = self.queue.send_refs(send)
        except Exception:
            log.exception("sending %d tasks failed; their marks stay", len(send))
            refused = {t.task_id for t in send}
        for task_id in refused:
            log.warning("SQS refused a task's message; its mark stays", extra={"task_id": task_id})
            outcomes[task_id] = None
        sent = [t for t in send if t.task_id not in refused]
        failures = self._queue_sent(sent, detail) if sent else {}
        for task in sent:
            failure = failures.get(task.task_id)
            outcomes[task.task_id] = True if failure is None else None
            if failure is not None:
                log.error(
                    "recording QUEUED failed; its mark stays (the resend collapses)",
                    exc_info=failure,
                    extra={"task_id": task.task_id},
                )
        return outcomes

    def _queue_sent(self, sent: list[Task], detail: str) -> dict[str, Exception]:
        """After the send of `sent` [enqueue.after_send]: each one QUEUED, clearing its mark.
        Returns the failure of each task whose write failed (its mark stays)."""
        failpoints.hit("enqueue.after_send")
        failures: dict[str, Exception] = {}
        for task in sent:
            try:
                # On Conflict a worker claimed it (the message overtook this write) or it was
                # cancelled: the mark is gone either way.
                with contextlib.suppress(Conflict):
                    self.store.transition(task, S.QUEUED, detail=detail)
            except Exception as exc:
                failures[task.task_id] = exc
        return failures

    def expire(self, task: Task) -> Task:
        """EXPIRED: never started, and past its start_by. Conditional on no effect recorded (as
        a cancel is); Conflict if it changed since it was read."""
        expired = self.store.transition(
            task,
            S.EXPIRED,
            detail="not started by its start_by",
            remove=LEASE_ATTRIBUTES,
            no_effects=True,
        )
        metrics.tasks_completed_total.labels(task.task_type, "expired").inc()
        return expired

    def _send_and_queue(self, pending: Task, detail: str, traceparent: str = "") -> None:
        self.queue.send(
            pending.task_id,
            pending.task_type,
            tenant=pending.tenant,
            lane=pending.lane,
            dedup_id=enqueue_dedup_id(pending),
            traceparent=traceparent,
        )
        failures = self._queue_sent([pending], detail)
        if failures:
            raise failures[pending.task_id]

    # ---- a run ----
    def receive(
        self, message: Message, worker_id: str, lease_ms: int, retrying: tenacity.Retrying
    ) -> Run | None:
        """The run a delivered message starts (its task claimed), or None once the message is
        dealt with otherwise: its task is gone or terminal (finished_with), leased by another
        live run (the message comes back when that lease would have run out), or out of
        attempts (dead_letter). `retrying` retries reads and writes on dependency faults.

        A first delivery carrying the committed task is claimed without a read: the claim is
        conditional on that version, and a Conflict sends it round again with a fresh read. A
        redelivery (a retry, a bounce) reads first: its snapshot is surely stale."""
        failpoints.hit("worker.after_receive")
        hint = message.snapshot if message.receive_count == 1 else None
        for _ in range(3):
            task = hint or self.store.get(message.task_id)
            hint = None
            if task is None:
                log.error("message for unknown task deleted", extra={"task_id": message.task_id})
                self._settle(message)
                return None
            if task.state.terminal:
                self.finished_with(message, task)  # a duplicate, or cancelled meanwhile
                return None
            now = now_ms()
            if task.expired_at(now) and task.state in (S.PENDING, S.QUEUED):
                try:
                    self.finished_with(message, self.expire(task))
                except Conflict:
                    continue
                return None
            if task.state == S.RUNNING and task.lease_expires_at_ms > now:
                # Another run holds a live lease. Deleting would strand the task if its worker
                # then died, so come back when the lease would have run out.
                wait = (task.lease_expires_at_ms - now) // 1000 + 1
                self.return_message(message, int(wait), task.max_attempts - task.attempts)
                return None
            if task.attempts >= task.max_attempts:
                error = task.last_error or "attempts exhausted"
                self.dead_letter(task, error, message, retrying=retrying)
                return None
            if not _receives_cover(message, task.max_attempts - task.attempts):
                # Runs that lost the message's visibility cost it receives and gave their
                # attempts back: run on a new message, not on one that a loss more would send
                # to the DLQ (and the compensator would mark the task DEAD, attempts left).
                self._replace(message)
                return None
            try:
                run = self._claim(task, message, worker_id, now + lease_ms, retrying)
            except Conflict:
                continue  # changed under us: decide again on a fresh read
            failpoints.hit("worker.after_claim")
            return run
        log.warning("gave up claiming after repeated conflicts", extra={"task_id": message.task_id})
        return None

    def _claim(
        self,
        task: Task,
        message: Message,
        worker_id: str,
        lease_until_ms: int,
        retrying: tenacity.Retrying,
    ) -> Run:
        """`task` RUNNING under a new lease, as its next attempt. A claim whose answer is lost
        past botocore's retries may have landed: its lease token is its own, so a read tells
        whether it did. Had it escaped instead, the task would stay RUNNING under a lease
        nobody extends, and the next delivery would take it over as another attempt (on the
        last one: DEAD, never run). Conflict if the claim did not land."""
        attempt = task.attempts + 1
        owner = lease_token(worker_id, attempt)
        try:
            claimed = self.store.transition(
                task,
                S.RUNNING,
                via=_via(task),
                detail=f"claimed by {worker_id}",
                set_values={_ATTEMPTS: attempt, _OWNER: owner, _EXPIRES: lease_until_ms},
            )
        except Exception as exc:
            # (A fault that trips the breaker surfaces as CircuitBreakerError.)
            if not is_dependency_fault(exc) and not isinstance(exc, pybreaker.CircuitBreakerError):
                raise
            fresh = retrying(self.store.get, task.task_id)
            if fresh is None or fresh.state != S.RUNNING or fresh.lease_owner != owner:
                raise Conflict(f"task {task.task_id}: the claim did not land") from exc
            claimed = fresh
        return Run(claimed, message, owner)

    def extend_lease(self, run: Run, lease_ms: int, budget: float) -> bool:
        """Push the lease out; False once the task is no longer RUNNING under it. (The
        message's visibility is the worker's to extend: it is no task state.)"""
        return self.store.extend_lease(run.task.task_id, run.owner, now_ms() + lease_ms, budget)

    def record_effect(self, task_id: str, effect: str, owner: str) -> bool:
        """The effect `effect` recorded once per task, under the lease (TaskStore.record_effect)."""
        return self.store.record_effect(task_id, effect, owner)

    def complete(self, run: Run, result: bytes, retrying: tenacity.Retrying) -> str:
        return self._finish(run, S.SUCCEEDED, {_RESULT: result}, "completed", retrying)

    def fail(self, run: Run, error: str, retrying: tenacity.Retrying) -> str:
        return self._finish(run, S.FAILED, {_ERROR: error}, error, retrying)

    def _finish(
        self,
        run: Run,
        to: TaskState,
        values: dict[str, Any],
        detail: str,
        retrying: tenacity.Retrying,
    ) -> str:
        try:
            self._leave_running(run, to, detail or "completed", values, retrying)
        except Conflict:
            return self.after_stop(run)
        metrics.tasks_completed_total.labels(run.task.task_type, to.value.lower()).inc()
        failpoints.hit("worker.after_complete")
        self._settle(run.message)
        return to.value.lower()

    def retry(self, run: Run, error: str, delay: int, retrying: tenacity.Retrying) -> str:
        """Back to QUEUED with the error; the message comes back after `delay` seconds."""
        detail = f"retry in {delay}s: {error}"
        try:
            self._leave_running(run, S.QUEUED, detail, {_ERROR: error}, retrying)
        except Conflict:
            return self.after_stop(run)
        try:
            self.queue.set_visibility(run.message.receipt_handle, delay, queue=run.message.queue)
        except Exception:
            log.warning("could not delay the retry; it comes back after the visibility timeout")
        return "retry"

    def _leave_running(
        self,
        run: Run,
        to: TaskState,
        detail: str,
        values: dict[str, Any],
        retrying: tenacity.Retrying,
    ) -> Task:
        return retrying(
            self.store.transition,
            run.task,
            to,
            detail=detail,
            set_values=values,
            remove=LEASE_ATTRIBUTES,
            lease_owner=run.owner,
        )

    def after_stop(self, run: Run) -> str:
        """The task changed under the run. If it was cancelled, the message is finished with;
        if another worker took it over, that worker owns the message now."""
        fresh = self.store.get(run.task.task_id)
        if fresh is not None and fresh.state == S.CANCELLED:
            self._settle(run.message)
            return "cancelled"
        return "lost_lease"

    def give_back(self, run: Run, detail: str) -> Task | None:
        """Task back to QUEUED, dropping the lease, if it is still the run's. The interrupted
        attempt does not count: a deploy or an SQS brownout must not use up a task's last
        attempt (a crash, which cannot give back, does count)."""
        try:
            task = self.store.get(run.task.task_id)
            if task is None or task.state != S.RUNNING or task.lease_owner != run.owner:
                return None
            return self.store.transition(
                task,
                S.QUEUED,
                detail=detail,
                set_values={_ATTEMPTS: max(0, task.attempts - 1)},
                remove=LEASE_ATTRIBUTES,
                lease_owner=run.owner,
            )
        except Exception:
            log.exception("could not give the task back; its lease will expire")
            return None

    def hand_back(self, run: Run) -> None:
        """Shutdown: give the task back and its message too, for another worker now."""
        back = self.give_back(run, "worker shut down before the task finished")
        if back is not None:
            try:
                self.return_message(run.message, 0, back.max_attempts - back.attempts)
            except Exception:
                log.exception("could not release the message; it returns at its timeout")

    def return_message(self, message: Message, delay: int, attempts_left: int) -> None:
        """Give `message` back, visible in `delay` s, without using one of the task's attempts
        (a bounce, a hand-back, a release). Each return still costs a receive under the queue's
        redrive policy, so a message without room left for the task's remaining attempts is
        replaced by a new one instead."""
        if _receives_cover(message, attempts_left):
            self.queue.set_visibility(message.receipt_handle, delay, queue=message.queue)
        else:
            self._replace(message)

    def _replace(self, message: Message) -> None:
        """A new message for `message`'s task (receive count 0), sent before the old one is
        deleted: a crash in between leaves a duplicate, which the conditional claim absorbs,
        and never no message. Visible at once (FIFO has no per-message delay), in the old
        message's group."""
        self.queue.send(
            message.task_id,
            message.task_type,
            queue=message.queue,
            group_id=message.group_id or None,
            dedup_id=f"{message.task_id}.{message.message_id}",
            traceparent=message.attributes.get("traceparent", ""),
        )
        self.queue.delete(message.receipt_handle, queue=message.queue)
        log.info("message replaced to keep its receives", extra={"task_id": message.task_id})

    # ---- dead letters ----
    def dead_letter(
        self,
        task: Task,
        error: str,
        message: Message,
        *,
        retrying: tenacity.Retrying | None = None,
        owner: str | None = None,
    ) -> str:
        """A task out of attempts: DEAD (under the lease `owner` when a run ends so), then its
        DLQ message, then its main-queue message goes. `retrying` retries the DEAD write (the
        worker's, on dependency faults). Returns the outcome: "dead", or "lost_lease" when
        another run holds the task now (its outcome stands)."""
        try:
            dead = self._record_dead(task, error, f"attempts exhausted: {error}", owner, retrying)
        except Conflict:
            fresh = self.store.get(task.task_id)
            if fresh is None or not fresh.state.terminal:
                return "lost_lease"
            dead = fresh
        self.finished_with(message, dead, retrying=retrying)
        return "dead"

    def compensate(self, message: Message) -> bool:
        """A DLQ message the queue's redrive policy moved there (a worker crashed on its task
        too often): its task, if not yet terminal, is dead-lettered as above (so the API never
        reports it RUNNING forever) with the message re-filed under the task's own group (FIFO
        would otherwise hide every later message of its group behind it). True if it marked
        the task DEAD; False if there was nothing to mark, or the task changed meanwhile (the
        message stays hidden until the scan's hold ends, and is looked at again then)."""
        task = self.store.get(message.task_id)
        if task is None or task.state.terminal:
            self.finished_with(message, task)
            return False
        detail = "moved to the DLQ by the queue's redrive policy"
        try:
            dead = self._record_dead(task, task.last_error or REDRIVE_POLICY_ERROR, detail)
        except Conflict:
            return False
        self.finished_with(message, dead)
        return True

    def _record_dead(
        self,
        task: Task,
        error: str,
        detail: str,
        owner: str | None = None,
        retrying: tenacity.Retrying | None = None,
    ) -> Task:
        dead: Task = (retrying or _once)(
            self.store.transition,
            task,
            S.DEAD,
            via=_via(task),
            detail=detail,
            set_values={_ERROR: error},
            remove=LEASE_ATTRIBUTES,
            lease_owner=owner,
        )
        metrics.tasks_completed_total.labels(task.task_type, "dead").inc()
        # ERROR, with the error itself: a poison incident is found by searching logs for ERROR.
        log.error(
            "task dead: %s",
            error,
            extra={
                "task_id": task.task_id,
                "task_type": task.task_type,
                "attempts": task.attempts,
                "detail": detail,
            },
        )
        failpoints.hit("dead_letter.after_dead")
        return dead

    def finished_with(
        self,
        message: Message,
        task: Task | None,
        retrying: tenacity.Retrying | None = None,
    ) -> None:
        """Delete a message whose task is terminal (or gone), a DEAD task's after its DLQ
        message is there: filed under the task's own group, deduplicated by the DEAD version,
        so finishing a dead_letter that died half-way files it once. A task queue's message is
        settled (the worker batches its deletes), a DLQ's deleted at once."""
        if task is not None and task.state == S.DEAD:
            (retrying or _once)(self.queue.dead_letter, task, task.last_error)
        if message.queue.kind == QUEUE_MAIN:
            self._settle(message)
        else:
            self.queue.delete(message.receipt_handle, queue=message.queue)

    def redrive(self, task_id: str, receipt_handle: str, dlq: QueueId) -> tuple[str, str]:
        """An operator's redrive of a DEAD task whose message in `dlq` (its lane's) is held by
        `receipt_handle`: back to PENDING with attempts reset and an outbox mark (so the relay
        finishes the job if this process dies half-way), enqueued to its lane's queue, then the
        DLQ message goes. Returns (outcome, detail): redriven, discarded (the task finished
        otherwise), or skipped."""
        task = self.store.get(task_id)
        if task is None or (task.state.terminal and task.state != S.DEAD):
            self.queue.delete(receipt_handle, queue=dlq)
            state = task.state.value if task else "missing"
            return "discarded", f"task is {state}; stale DLQ message removed"
        if task.state != S.DEAD:
            self.queue.set_visibility(receipt_handle, 0, queue=dlq)
            return "skipped", f"task is {task.state.value}, not DEAD yet"
        # The redrive and the attempts it leads to stay on the task's own trace (its submit's).
        submitted = propagate.extract({"traceparent": task.traceparent})
        with tracer.start_as_current_span(
            "conveyor.task redrive",
            context=submitted,
            attributes={"conveyor.task_id": task_id, "conveyor.task_type": task.task_type},
        ):
            return self._redrive_dead(task, receipt_handle, dlq)

    def _redrive_dead(self, task: Task, receipt_handle: str, dlq: QueueId) -> tuple[str, str]:
        task_id = task.task_id
        try:
            pending = self.store.transition(
                task,
                S.PENDING,
                detail="redriven from the DLQ",
                set_values={_ATTEMPTS: 0, **self.store.outbox_mark(task_id, now_ms())},
            )
        except Conflict:
            self.queue.set_visibility(receipt_handle, 0, queue=dlq)
            return "skipped", "task changed meanwhile; try again"
        failpoints.hit("redrive.after_pending")
        self._send_and_queue(pending, "sent by the DLQ redrive")
        failpoints.hit("redrive.after_send")
        self.queue.delete(receipt_handle, queue=dlq)
        what = "DEAD -> PENDING -> QUEUED with attempts reset"
        log.info(
            "task redriven from the DLQ: %s",
            what,
            extra={
                "task_id": task_id,
                "task_type": task.task_type,
                "attempts": task.attempts,
                "last_error": task.last_error,
            },
        )
        return "redriven", what

    # ---- the client's ----
    def cancel(self, task: Task, reason: str, remaining: float | None = None) -> Task:
        """CANCELLED unless its handler recorded an effect (EffectsApplied); Conflict if it
        changed since it was read. Its message is deleted by whichever worker meets it."""
        cancelled = self.store.cancel(task, reason, remaining)
        metrics.tasks_completed_total.labels(task.task_type, "cancelled").inc()
        return cancelled
