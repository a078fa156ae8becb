"""The worker loop: receive, claim under a lease, heartbeat, run the handler, settle.

Concurrency is bounded by a semaphore. The poller receives in batches of up to 10 into a
bounded prefetch (conveyor.worker.prefetch; what it has no room for is released at once) and a
dispatcher starts each waiting message when a slot frees; a message that waited longer than a
heartbeat interval is released, not started (at once, whether or not a slot is free), so
every run keeps the visibility margin the heartbeat rules assume (its visibility heartbeat
counts from the receive). The poller receives from the priority lanes' queues high first
without starving the default lane (the rule, and what idle polling costs: conveyor.worker.lanes).
After a receive the poller lingers (up to
CONVEYOR_RECEIVE_LINGER_SECONDS, see `linger_seconds`) so that receives come in batches, and
settled messages are deleted in batches too (DeleteBatcher). Each message runs on one of the
daemon runner threads, one per slot, with two heartbeat loops beside it, each on a thread of
its own started half an interval before its first beat (conveyor.worker.hearts), that extend
the SQS visibility timeout and the DynamoDB lease, and notice cancellation.

Per task type (conveyor.tasks.registry): its backoff and permanent errors decide a failure; a
handler past its `timeout` is no longer waited for (its slot is free again) and its attempt
fails as retryable, which drops the run's lease, so whatever the abandoned run still tries
(an effect, a heartbeat, an outcome) fails the lease fence. A type with a `concurrency` has at
most that many tasks in flight here: a message beyond it goes back to the queue for a moment,
unclaimed (it costs a receive, not an attempt).

Shutdown (SIGTERM): stop polling; messages a poll returns after that, and those still waiting
in the prefetch, are released at once (visibility 0); in-flight tasks keep heartbeating until
they finish or the grace period ends, after which their lease is handed back (task to QUEUED,
message visible) so another worker takes over without waiting for the lease to expire.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any

import pybreaker
import tenacity
from opentelemetry import propagate, trace
from pydantic import BaseModel, ValidationError

from conveyor import failpoints
from conveyor.aws import is_dependency_fault
from conveyor.domain import LANES, MAX_ATTEMPTS_LIMIT, MAX_RESULT_BYTES, bounded_error
from conveyor.queue import DeleteBatcher, MalformedMessage, Message, TaskQueue, parse, queue_of
from conveyor.queue import main as main_queue
from conveyor.runtime import HAND_BACK_SECONDS
from conveyor.settings import WorkerSettings
from conveyor.store import TaskStore, now_ms
from conveyor.tasks.lifecycle import Lifecycle, Run
from conveyor.tasks.registry import TaskType
from conveyor.telemetry import metrics
from conveyor.worker.handlers import PermanentError, TaskCancelled, TaskContext
from conveyor.worker.hearts import Hearts, HeartStarter
from conveyor.worker.lanes import LaneTurns
from conveyor.worker.prefetch import Prefetch

log = logging.getLogger("conveyor.worker")
tracer = trace.get_tracer("conveyor.worker")

# A message of a task type at its concurrency limit here is visible again after this long.
TYPE_BUSY_DELAY_SECONDS = 1


class HandlerTimeout(Exception):
    """The handler ran past its type's timeout: a retryable failure of the attempt."""


def backoff_seconds(attempt: int, base: float, cap: float) -> int:
    """Full-jitter exponential backoff (tenacity's), whole seconds for the visibility timeout."""
    state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return round(tenacity.wait_random_exponential(multiplier=base, max=cap)(state))


def _as_bytes(result: object) -> bytes:
    """A handler's result as stored: bytes as they are, str as UTF-8, None as empty. Anything
    else fails the task rather than storing a value `TaskStore.get` could not read back."""
    if result is None:
        return b""
    if isinstance(result, BaseModel):
        return result.model_dump_json().encode()
    if isinstance(result, str):
        return result.encode()
    if isinstance(result, bytes | bytearray | memoryview):
        return bytes(result)
    raise PermanentError(
        f"a handler must return a pydantic model, bytes, str or None, not {type(result).__name__}"
    )


def linger_seconds(
    raw: list[dict[str, Any]], asked: int, now: int, linger: float, batch: int
) -> float:
    """How long the poller waits before its next receive, so that it gathers a batch of up to
    `batch` messages: `linger` after a receive that brought less than it asked for; after one
    that brought all it asked for, nothing if the queue is behind, else about as long as the
    next batch takes to arrive at the rate the messages of this one were sent, `linger` at most.

    A receive asks for as many messages as there are free slots, often only a few while the
    last batch still runs. Receiving again at once after such a "full" receive of messages
    sent just now took whatever arrived in the meantime, often one message: at 20 tasks/s a
    receive carried 4 to 5 messages on average whether the linger was 0.5, 0.75 or 1 s
    (issue 9). Lingering the whole `linger` after it
    instead would hold a busy queue a linger behind (about 10% of the bench's 300-task runs);
    at the batch's own arrival rate the wait shrinks as the rate grows. The queue is behind
    when even the youngest message had waited a linger or more (SQS's SentTimestamp against
    this clock; a skew that large would only shorten or lengthen a wait by at most `linger`)."""
    if len(raw) < asked:
        return linger  # the queue had less than we could take
    sent = sorted(int(m.get("Attributes", {}).get("SentTimestamp", 0)) for m in raw)
    if not sent or now - sent[-1] >= linger * 1000:
        return 0.0
    if len(sent) < 2:
        return linger
    per_message = (sent[-1] - sent[0]) / 1000 / (len(sent) - 1)
    return min(linger, batch * per_message)


@dataclass
class _InFlight:
    run: Run
    held_until: float  # monotonic time the message turns visible unless the heartbeat extends it
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)  # handed back
    lost_message: threading.Event = field(default_factory=threading.Event)  # visibility lapsed

    def holds_message(self) -> bool:
        """Whether no other delivery can act on the task yet: the message is still invisible
        and was not handed back."""
        return not self.released.is_set() and time.monotonic() < self.held_until


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        store: TaskStore,
        queue: TaskQueue,
        types: Mapping[str, TaskType],
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.types = types
        self.tasks = Lifecycle(store, queue, settle=self._delete)
        self._slots = threading.BoundedSemaphore(settings.worker_concurrency)
        self._type_slots = {
            name: threading.BoundedSemaphore(t.concurrency)
            for name, t in types.items()
            if t.concurrency is not None
        }
        self._inflight: dict[str, _InFlight] = {}
        self._lock = threading.Lock()
        # Message threads alive, counted before they start: the drain waits for tasks still
        # being claimed too, not only those already registered as in flight.
        self._active = 0
        self._idle = threading.Condition(self._lock)
        self._deleter = DeleteBatcher(queue, settings.delete_linger_seconds)
        self._hearts = HeartStarter()
        # Messages started on a free slot, for the runner threads (`_runner`); None stops one.
        self._runs: SimpleQueue[tuple[Message, float] | None] = SimpleQueue()
        # Waits are kept to half a heartbeat interval at the slots' pace; a whole one is the limit.
        self._prefetch = Prefetch(
            settings.worker_concurrency, settings.heartbeat_interval_seconds / 2
        )
        metrics.export(*metrics.WORKER_METRICS)
        metrics.worker_concurrency_limit.set(settings.worker_concurrency)
        metrics.start_task_series(types)

    # ---- the loop ----
    def run(self, stop: threading.Event) -> None:
        """Poll until `stop` is set, then drain. Returns when every task has settled."""
        loops = [
            threading.Thread(target=loop, args=(stop,), name=loop.__name__[1:], daemon=True)
            for loop in (self._poll, self._dispatch)
        ]
        # One runner thread per slot runs the messages the dispatcher starts (daemons: a run
        # past the shutdown's deadline does not hold the process).
        for n in range(self.settings.worker_concurrency):
            threading.Thread(target=self._runner, name=f"runner-{n}", daemon=True).start()
        for loop in loops:
            loop.start()
        stop.wait()
        log.info("worker stopping: draining in-flight tasks", extra={"inflight": self.inflight})
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds
        for loop in loops:
            loop.join(max(0.0, deadline - time.monotonic()))
        for raw in self._prefetch.close():
            self._release(raw)
        with self._idle:
            self._idle.wait_for(
                lambda: self._active == 0, timeout=max(0.0, deadline - time.monotonic())
            )
        self._hand_back_all(self._snapshot())
        for _ in range(self.settings.worker_concurrency):
            self._runs.put(None)  # each runner ends once it is done with its run, if any
        self._deleter.close()
        log.info("worker stopped")

    def _hand_back_all(self, items: list[_InFlight]) -> None:
        """Hand every unfinished task back side by side, waiting at most HAND_BACK_SECONDS (what
        is left of ECS's stopTimeout after the grace period; WorkerSettings checks it fits).
        Their calls keep their configured timeouts: cut to the few seconds left, each would
        get a timeout too short for a slow DynamoDB."""
        if not items:
            return
        deadline = time.monotonic() + HAND_BACK_SECONDS
        threads = [
            threading.Thread(target=self._hand_back, args=(item,), name="hand-back", daemon=True)
            for item in items
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            # One still running at the deadline is left behind: its lease and visibility expire.
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def _snapshot(self) -> list[_InFlight]:
        with self._lock:
            return list(self._inflight.values())

    def _poll(self, stop: threading.Event) -> None:
        """Receive into the prefetch whenever a batch fits, from the lanes in the order
        conveyor.worker.lanes decides: short polls while busy, long polls of every lane side
        by side while idle."""
        turns = LaneTurns(LANES, self.settings.lane_turn_after)
        idle = False
        long_polls: dict[str, Future[list[dict[str, Any]]]] = {}  # per lane, the latest
        with ThreadPoolExecutor(len(LANES), thread_name_prefix="long-poll") as pollers:
            while not stop.is_set():
                asked = self._prefetch.room(timeout=0.5)
                if not asked:
                    continue
                try:
                    if idle:
                        raw = self._long_poll(pollers, long_polls, asked, stop)
                    else:
                        order = turns.order()
                        raw, lane = self._short_polls(order, asked, stop)
                        turns.served(order, lane)
                except Exception:
                    log.exception("receive failed; retrying")
                    raw = []
                    stop.wait(1.0)
                idle = not raw
                wait = linger_seconds(
                    raw, asked, now_ms(), self.settings.receive_linger_seconds, asked
                )
                if wait:
                    stop.wait(wait)

    def _take_in(self, raw: list[dict[str, Any]], stop: threading.Event) -> None:
        refused = raw if stop.is_set() else self._prefetch.put(raw, time.monotonic())
        for message in refused:
            self._release(message)

    def _short_polls(
        self, order: tuple[str, ...], asked: int, stop: threading.Event
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Up to `asked` messages from the lanes in `order`, each lane asked for what the ones
        before it left, and the first lane that had any. A lane whose receive fails (denied,
        throttled, its queue gone) is logged and skipped, so the other lanes are still served;
        only if every lane asked failed does the error reach the poller (which backs off)."""
        got: list[dict[str, Any]] = []
        first = None
        failed: Exception | None = None
        asked_lanes = failures = 0
        for lane in order:
            if len(got) >= asked:
                break
            asked_lanes += 1
            try:
                raw = self.queue.receive(
                    asked - len(got),
                    0,
                    self.settings.visibility_timeout_seconds,
                    queue=main_queue(lane),
                )
            except Exception as exc:
                log.exception(
                    "receive from a lane failed; polling the others", extra={"lane": lane}
                )
                failed = exc
                failures += 1
                continue
            if raw:
                self._take_in(raw, stop)
                got += raw
                first = first or lane
        if failed is not None and failures == asked_lanes:
            raise failed
        return got, first

    def _long_poll(
        self,
        pollers: ThreadPoolExecutor,
        long_polls: dict[str, Future[list[dict[str, Any]]]],
        asked: int,
        stop: threading.Event,
    ) -> list[dict[str, Any]]:
        """Every lane long-polled side by side (a lane whose long poll from an earlier round
        is still waiting keeps it), each lane's messages put in the prefetch as they come.
        Returns once one of them brought messages (the others go on waiting, and put theirs
        in the prefetch when they come: the next receives need not wait a poll out), or all
        came back empty. Several lanes bringing messages at once, or a long poll that brings
        messages once the worker is busy again, may bring more than the prefetch has room for:
        those are released at once (conveyor.worker.prefetch), not left invisible behind the
        runs in progress."""
        for lane in LANES:
            if lane not in long_polls or long_polls[lane].done():
                long_polls[lane] = pollers.submit(self._receive_into, lane, asked, stop)
        lane_of = {future: lane for lane, future in long_polls.items()}
        waiting = set(lane_of)
        raw: list[dict[str, Any]] = []
        failed: BaseException | None = None
        while waiting and not raw:
            done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    raw += future.result()
                except Exception as exc:
                    log.warning("long poll of a lane failed", extra={"lane": lane_of[future]})
                    failed = exc
        if failed is not None and not raw:
            raise failed
        return raw

    def _receive_into(self, lane: str, asked: int, stop: threading.Event) -> list[dict[str, Any]]:
        """One long poll of `lane`'s queue, its messages put in the prefetch."""
        raw = self.queue.receive(
            asked,
            self.settings.poll_wait_seconds,
            self.settings.visibility_timeout_seconds,
            queue=main_queue(lane),
        )
        self._take_in(raw, stop)
        return raw

    def _dispatch(self, stop: threading.Event) -> None:
        """Start each waiting message on a free slot, oldest first; while every slot is busy,
        release those that waited past the limit."""
        limit = self.settings.heartbeat_interval_seconds
        while not stop.is_set():
            if not self._slots.acquire(timeout=0.5):
                # Every slot busy: what waited past its limit goes back now, not when one frees.
                for raw in self._prefetch.expired(limit, time.monotonic()):
                    self._release(raw)
                continue
            waiting = self._prefetch.take(timeout=0.5)
            if waiting is None:
                self._slots.release()
                continue
            if stop.is_set() or time.monotonic() - waiting.received_at > limit:
                # Stopping, or it waited so long that a run would start with less visibility
                # than its heartbeats need: give it back unclaimed.
                self._slots.release()
                self._prefetch.finished(None)
                self._release(waiting.raw)
                continue
            self._start(waiting.raw, waiting.received_at)

    def _release(self, raw: dict[str, Any]) -> None:
        try:
            try:
                message = parse(raw)
            except MalformedMessage:
                self.queue.set_visibility(raw["ReceiptHandle"], 0, queue=queue_of(raw))
                return
            # The task was not read: assume it has the most attempts left.
            self.tasks.return_message(message, 0, MAX_ATTEMPTS_LIMIT)
        except Exception:
            log.exception("could not release message; it returns after its visibility timeout")

    def _start(self, raw: dict[str, Any], received_at: float) -> None:
        try:
            message = parse(raw)
        except MalformedMessage as exc:
            # Not ours to interpret; leave it for the redrive policy to move to the DLQ.
            log.error("malformed message left for the DLQ", extra={"error": str(exc)})
            self._slots.release()
            self._prefetch.finished(None)
            return
        with self._lock:
            self._active += 1
        self._runs.put((message, received_at))

    def _runner(self) -> None:
        """Run the started messages, one at a time, each in a context of its own (empty, as a
        new thread's: nothing of the run before, such as its trace span, carries over).

        A thread per message used to be started and torn down for every task; the slots
        already bound the runs in flight, so as many threads as slots, reused, do the same
        (about 0.3 ms of the worker's CPU per no-op task at saturation, issue 18). A slot is
        freed just before its runner is, so a message started on it may wait that long."""
        while (started := self._runs.get()) is not None:
            try:
                contextvars.Context().run(self._run_message, *started)
            except BaseException:  # a handler's SystemExit, say: the runner serves on
                log.exception("a task run ended abnormally")

    def _run_message(self, message: Message, received_at: float) -> None:
        started = time.monotonic()
        parent = propagate.extract(message.attributes)
        try:
            with tracer.start_as_current_span(
                "conveyor.task process",
                context=parent,
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "aws_sqs",
                    "messaging.operation": "process",
                    "messaging.message.id": message.message_id,
                    "conveyor.task_id": message.task_id,
                    "conveyor.task_type": message.task_type,
                },
            ):
                self._process(message, received_at)
        except Exception:
            log.exception("task processing failed; the message will be redelivered")
        finally:
            self._slots.release()
            self._prefetch.finished(time.monotonic() - started)
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    # ---- one message ----
    def _process(self, message: Message, received_at: float) -> None:
        type_slot = self._type_slots.get(message.task_type)
        if type_slot is not None and not type_slot.acquire(blocking=False):
            # The task was not read: assume it has the most attempts left.
            self.tasks.return_message(message, TYPE_BUSY_DELAY_SECONDS, MAX_ATTEMPTS_LIMIT)
            return
        try:
            self._claim_and_run(message, received_at)
        finally:
            if type_slot is not None:
                type_slot.release()

    def _claim_and_run(self, message: Message, received_at: float) -> None:
        lease_ms = int(self.settings.lease_seconds * 1000)
        run = self.tasks.receive(message, self.settings.worker_id, lease_ms, self._retrying(None))
        if run is None:
            return
        if run.task.attempts == 1:
            metrics.task_queue_delay_seconds.labels(run.task.task_type).observe(
                # from when it was due: a delayed task waits on purpose until then
                max(0.0, (now_ms() - max(run.task.created_at_ms, run.task.not_before_ms)) / 1000)
            )
        held_until = received_at + self.settings.visibility_timeout_seconds
        self._run_claimed(_InFlight(run, held_until))

    def _run_claimed(self, item: _InFlight) -> None:
        task = item.run.task
        with self._lock:
            self._inflight[task.task_id] = item
        metrics.worker_inflight_tasks.inc()
        interval = self.settings.heartbeat_interval_seconds
        # The lease runs from the claim; the message's visibility from its receive, which
        # was earlier if the message waited in the prefetch.
        received_at = item.held_until - self.settings.visibility_timeout_seconds
        # Each loop on a thread of its own, started half an interval before its first beat
        # (it waits for the beat itself): a task done before then starts none
        # (conveyor.worker.hearts).
        hearts = Hearts(item.done)
        started = time.monotonic()
        outcome = "unrecorded"  # the outcome could not be written: the lease lapses, re-run
        try:
            for extend, first in (
                (self._extend_lease, started + interval),
                (self._extend_visibility, received_at + interval),
            ):
                start_at = first - interval / 2
                self._hearts.schedule(start_at, hearts, self._beat, (item, extend, first))
            outcome = self._attempt(item)
        finally:
            hearts.finish()  # sets item.done; no beat outlives the attempt
            with self._lock:
                self._inflight.pop(task.task_id, None)
            metrics.worker_inflight_tasks.dec()
            metrics.task_processing_seconds.labels(task.task_type).observe(
                time.monotonic() - started
            )
            metrics.task_attempts_total.labels(task.task_type, outcome).inc()
            log.info(
                "task attempt finished",
                extra={
                    "task_id": task.task_id,
                    "task_type": task.task_type,
                    "attempt": task.attempts,
                    "outcome": outcome,
                },
            )

    def _attempt(self, item: _InFlight) -> str:
        """Run the handler and record its outcome. Only the handler's own exceptions decide
        the outcome; an error recording it propagates (and the attempt is re-run later)."""
        run, retrying = item.run, self._retrying(item)
        declared = self.types.get(run.task.task_type)
        permanent = declared.permanent if declared else ()
        try:
            result = self._handle(item, declared)
        except TaskCancelled:
            if item.lost_message.is_set():
                self.tasks.give_back(run, "the worker lost its message's visibility")
                return "given_back"
            return self.tasks.after_stop(run)
        except PermanentError as exc:
            return self.tasks.fail(run, bounded_error(str(exc)), retrying)
        except Exception as exc:
            error = bounded_error(f"{type(exc).__name__}: {exc}")
            if isinstance(exc, permanent):
                return self.tasks.fail(run, error, retrying)
            attempt = run.task.attempts
            if attempt >= run.task.max_attempts:
                return self.tasks.dead_letter(
                    run.task, error, run.message, retrying=retrying, owner=run.owner
                )
            base, cap = self.settings.backoff_base_seconds, self.settings.backoff_max_seconds
            if declared is not None and declared.backoff is not None:
                base, cap = declared.backoff.base_seconds, declared.backoff.cap_seconds
            return self.tasks.retry(run, error, backoff_seconds(attempt, base, cap), retrying)
        failpoints.hit("worker.after_effect")
        return self.tasks.complete(run, result, retrying)

    def _handle(self, item: _InFlight, declared: TaskType | None) -> bytes:
        task = item.run.task
        if declared is None:
            raise PermanentError(f"no handler for task type {task.task_type!r}")
        try:
            payload = declared.payload.model_validate_json(task.payload)
        except ValidationError as exc:
            # The API checked it at submit: a model changed incompatibly since (the schema
            # gate exists to prevent that). It will never parse.
            raise PermanentError(
                f"payload does not fit {declared.payload.__qualname__}: {exc}"
            ) from None
        context = TaskContext(
            task,
            task.attempts,
            item.stop,
            self.tasks,
            item.run.owner,
            lambda: self._retrying(item),
        )
        result = _as_bytes(self._call(declared, context, payload, item))
        if len(result) > MAX_RESULT_BYTES:
            raise PermanentError(
                f"the handler's result is {len(result)} bytes; the limit is {MAX_RESULT_BYTES}"
            )
        return result

    def _call(
        self, declared: TaskType, context: TaskContext, payload: BaseModel, item: _InFlight
    ) -> object:
        """The handler's result; with a timeout, it runs on a thread of its own that is
        abandoned (told to stop, no longer waited for) when the timeout expires."""
        if declared.timeout is None:
            return declared.handler(context, payload)
        future: Future[object] = Future()
        run = contextvars.copy_context().run  # the task's trace span, in the handler's thread

        def call() -> None:
            try:
                future.set_result(run(declared.handler, context, payload))
            except BaseException as exc:  # handed to the waiting thread, which decides
                future.set_exception(exc)

        threading.Thread(target=call, name=f"handler-{context.task.task_id}", daemon=True).start()
        try:
            return future.result(timeout=declared.timeout)
        except TimeoutError:
            if future.done():  # finished as the wait expired: it did run to its end
                return future.result()
            item.stop.set()
            raise HandlerTimeout(
                f"the handler ran past its {declared.timeout:g} s timeout"
            ) from None

    # ---- heartbeats ----
    def _beat(
        self, item: _InFlight, extend: Callable[[_InFlight, float], bool], next_beat: float
    ) -> None:
        """Call `extend(item, budget)` from `next_beat` on (a monotonic time), once per
        heartbeat interval, at a fixed rate, until the
        task is done or `extend` returns False. The lease and the message each have a loop of
        their own, and every call's AWS timeouts and retries fit in one interval (`budget`),
        so a slow DynamoDB cannot hold back the visibility extension, nor SQS the lease, and
        a hung call cannot push the next beat back. An extension thus lands within one
        interval of its beat; with one beat allowed to fail, three intervals must fit into
        the visibility timeout and the lease (WorkerSettings checks it)."""
        interval = self.settings.heartbeat_interval_seconds
        while not item.done.wait(max(0.0, next_beat - time.monotonic())):
            next_beat = max(next_beat + interval, time.monotonic())
            if not extend(item, interval):
                return

    def _extend_lease(self, item: _InFlight, budget: float) -> bool:
        try:
            lease_ms = int(self.settings.lease_seconds * 1000)
            if not self.tasks.extend_lease(item.run, lease_ms, budget):
                log.info("lease gone (cancelled or taken over): stopping the handler")
                item.stop.set()
                return False
        except Exception:
            log.exception("heartbeat could not extend the lease")
        return True

    def _extend_visibility(self, item: _InFlight, budget: float) -> bool:
        if time.monotonic() >= item.held_until:
            # The message may be visible again: on AWS its receipt handle is dead and another
            # receive may own it. Stop, and give the task back for whoever receives it next.
            log.warning("lost the message's visibility: stopping the handler")
            item.lost_message.set()
            item.stop.set()
            return False
        try:
            sent = time.monotonic()
            self.queue.set_visibility(
                item.run.message.receipt_handle,
                self.settings.visibility_timeout_seconds,
                queue=item.run.message.queue,
                remaining=budget,
            )
            item.held_until = sent + self.settings.visibility_timeout_seconds
        except Exception:
            log.exception("heartbeat could not extend the message's visibility")
        return True

    # ---- settling ----
    def _delete(self, message: Message) -> None:
        """Delete a message whose outcome is recorded; if that fails it comes back, finds the
        task terminal and is deleted then."""
        with self._lock:
            settling = self._active  # message threads alive, this one included
        # The last one of a receive batch to settle sends the batch's deletes at once.
        self._deleter.add(message.receipt_handle, queue=message.queue, flush=settling <= 1)

    def _retrying(self, item: _InFlight | None) -> tenacity.Retrying:
        """Retries, on dependency faults, of a write that records an outcome: a failed write
        is not a failed handler. For a task in flight they go on for as long as this worker
        holds its message, since no other delivery can act on the task meanwhile (a handler
        that succeeded on its last attempt must not end DEAD because DynamoDB throttled for
        a while); otherwise for half a lease."""
        stop: Any = tenacity.stop_after_delay(self.settings.lease_seconds / 2)
        if item is not None:
            stop = lambda _: not item.holds_message()  # noqa: E731
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_dependency_fault)
            | tenacity.retry_if_exception_type(pybreaker.CircuitBreakerError),
            wait=tenacity.wait_random_exponential(multiplier=0.2, max=2.0),
            stop=stop,
            reraise=True,
        )

    def _hand_back(self, item: _InFlight) -> None:
        """Grace period over: give the task and its message back for another worker."""
        item.stop.set()
        item.released.set()
        self.tasks.hand_back(item.run)
