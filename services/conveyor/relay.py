"""`python -m conveyor.relay`: the outbox relay, the crash safety net of the submit path.

The API commits a task with an outbox mark and then sends its message. If the API dies in
between, or SQS refuses the send, the mark stays. Each sweep the relay sends the message of
every mark older than CONVEYOR_OUTBOX_AGE_SECONDS (same MessageDeduplicationId as the API
used, so a send that did land is collapsed by SQS) and moves the task to QUEUED.

The relay also exports the queue-depth and queue-age gauges the alerts use (conveyor.queue_age),
and runs the DLQ compensator: a message the queue's redrive policy moved to the DLQ (a worker
that crashed on it too often) belongs to a task that is not yet terminal; the compensator marks
it DEAD so that the API never reports it RUNNING forever.

The outbox is queried only when it can hold a stale mark (issue 9: every request counts). A mark
matters once it is older than the outbox age, so the outbox is queried when the oldest mark
the last query saw turns stale, or an outbox age after that query (no mark set since can be
stale before then): at a sweep no later than one interval after a mark turns stale, as
before, at about one query per outbox age instead of one per sweep.

Delayed tasks: a task submitted with a not_before ahead has a due mark dated then (conveyor.
schema: the DUE# partitions of the outbox index) and no message. Each sweep queries the due
marks earliest first (one query per outbox shard), sends those due, and sleeps no later than
the next one's due time. So a delayed task reaches the queue at its due time plus the send's
own time when it was submitted at least one CONVEYOR_RELAY_INTERVAL_SECONDS before it, and
within one interval of it otherwise (the relay learns of it at its next sweep). Of a task past
its start_by the relay records EXPIRED instead of sending it.

Many tasks due at once (Lifecycle.enqueue_many): every due mark the query read (up to
CONVEYOR_RELAY_BATCH_SIZE per outbox shard) goes, the tasks read a hundred at a time
(BatchGetItem), sent ten at a time (SendMessageBatch, each with its submit's dedup id) and
recorded QUEUED one by one, CONVEYOR_RELAY_DUE_CONCURRENCY batches of ten side by side (the
first ten go while the next hundred are read); a full page is queried again at once. Each
task keeps the order above (send, then QUEUED; the mark stays until QUEUED), and one whose
read, send or write fails keeps its mark for the next sweep without holding back the others.
Measured with `make bench`'s delayed phase (1,000 tasks due at one moment, 2 workers, the
embedded emulator, 2 shared cores): README, "Delayed tasks and deadlines".

Recurring schedules: each sweep also fires the schedules whose next slot has come
(conveyor.scheduler), and sleeps no later than the next slot it saw.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from conveyor.process import serve
from conveyor.queue import (
    DEAD_LETTER_QUEUES,
    DEPTH_STATES,
    QUEUE_DLQ,
    MalformedMessage,
    QueueId,
    TaskQueue,
    dead_letter_group,
    parse,
)
from conveyor.queue_age import BacklogClock
from conveyor.schedule_store import ScheduleStore
from conveyor.scheduler import Scheduler
from conveyor.settings import RelaySettings
from conveyor.store import OutboxMark, TaskStore, now_ms
from conveyor.tasks.lifecycle import SEND_BATCH, Lifecycle
from conveyor.telemetry import metrics

log = logging.getLogger("conveyor.relay")
T = TypeVar("T")


class Relay:
    def __init__(self, settings: RelaySettings, store: TaskStore, queue: TaskQueue) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.tasks = Lifecycle(store, queue)
        self._next_outbox_query_ms = 0  # wall clock, as the marks' times are
        self._next_dlq_scan = 0.0  # monotonic
        self._dlq_depth: dict[str, int] = {}  # visible messages per lane's DLQ, last export
        self._next_due_ms: int | None = None  # the next delayed task's due time, if known
        self.scheduler = Scheduler(
            ScheduleStore(store), self.tasks, settings.relay_interval_seconds
        )
        self._next_slot_ms: int | None = None  # the next schedule slot, if known
        self._backlog = {name: BacklogClock() for name in queue.urls}
        metrics.export(*metrics.RELAY_METRICS)

    def run(self, stop: threading.Event) -> None:
        while True:
            self.sweep()
            if stop.wait(self._pause()):
                return

    def _pause(self) -> float:
        """Seconds to the next sweep: one interval, or less when a delayed task comes due."""
        pause = self.settings.relay_interval_seconds
        for next_ms in (self._next_due_ms, self._next_slot_ms):
            if next_ms is not None:
                pause = min(pause, max(0.0, (next_ms - now_ms()) / 1000))
        return pause

    def sweep(self) -> int:
        """One pass: relay stale marks, refresh gauges, compensate DLQ. Returns tasks relayed.

        Each part runs even when another failed (an outbox query that fails in a DynamoDB
        brownout must not stop the SQS gauges the alerts read, nor the DLQ compensation)."""
        relayed = 0
        if now_ms() >= self._next_outbox_query_ms:
            relayed = self._part("relaying stale outbox marks", self.relay_stale_marks) or 0
        relayed += self._part("relaying due delayed tasks", self.relay_due_marks) or 0
        self._part("firing due schedules", self.fire_schedules)
        self._part("exporting queue depths", self.export_queue_depths)
        if time.monotonic() >= self._next_dlq_scan:
            # A scan costs about 1.1 SQS requests per DLQ message (receives of 10, then one
            # visibility reset each): every sweep while the DLQ is small, and no more than
            # ~10 requests a second on average once it is large.
            self._next_dlq_scan = time.monotonic() + sum(self._dlq_depth.values()) / 10
            self._part("compensating the DLQ", self.compensate_dlq)
        return relayed

    @staticmethod
    def _part(what: str, step: Callable[[], T]) -> T | None:
        try:
            return step()
        except Exception:
            log.exception("relay sweep: %s failed; trying again next sweep", what)
            return None

    def relay_stale_marks(self) -> int:
        """Relay every stale mark, and set when the outbox is worth querying next."""
        now = now_ms()
        limit = self.settings.relay_batch_size
        marks = self.store.outbox_marks(now + 1, limit)
        metrics.outbox_pending_tasks.set(len(marks))
        metrics.outbox_oldest_age_seconds.set((now - marks[0].marked_at_ms) / 1000 if marks else 0)
        age_ms = int(self.settings.outbox_age_seconds * 1000)
        cutoff = now - age_ms
        relayed = 0
        for mark in marks:
            if mark.marked_at_ms >= cutoff:
                break
            if not self.tasks.enqueue(mark.task_id):
                continue
            metrics.outbox_relayed_total.inc()
            relayed += 1
            log.info("relayed outbox mark", extra={"task_id": mark.task_id})
        # Set only once every stale mark went out: a failed send leaves the next sweep to query.
        self._next_outbox_query_ms = self._next_query_ms(marks, now, age_ms, limit)
        return relayed

    def relay_due_marks(self) -> int:
        """Send every delayed task that is due (its start_by passed: EXPIRED instead), and note
        when the next one is: at once if the query hit its limit (`limit` due or more: more
        may be due behind) and the sweep got anywhere (a brownout that failed every send
        waits an interval). Every due mark the query read goes, up to `limit` per shard.

        The due tasks are enqueued in batches of ten, CONVEYOR_RELAY_DUE_CONCURRENCY batches
        side by side (Lifecycle.enqueue_many: each task sent, then QUEUED): a task whose
        enqueue fails keeps its mark for the next sweep and holds back none of the others.
        The lag is observed once the page is done: an upper bound for its earlier tasks."""
        self._next_due_ms = None
        limit = self.settings.relay_batch_size
        marks = self.store.due_marks(limit)
        now = now_ms()
        due = [m for m in marks if m.marked_at_ms <= now]
        if len(due) < len(marks):
            self._next_due_ms = marks[len(due)].marked_at_ms
        if not due:
            return 0
        ids = [m.task_id for m in due]
        batches = -(-len(ids) // SEND_BATCH)
        workers = min(self.settings.relay_due_concurrency, batches)
        with ThreadPoolExecutor(workers, thread_name_prefix="relay-due") as pool:
            outcomes = self.tasks.enqueue_many(ids, "sent by the relay: due", pool.map)
        relayed = 0
        for mark in due:
            if outcomes.get(mark.task_id):
                metrics.delayed_task_lag_seconds.observe(
                    max(0, now_ms() - mark.marked_at_ms) / 1000
                )
                relayed += 1
        failed = sum(1 for o in outcomes.values() if o is None)
        if len(due) >= limit and failed < len(due):
            self._next_due_ms = 0
        return relayed

    def fire_schedules(self) -> int:
        """Fire the due schedules; note the next slot (at once if the query hit its limit)."""
        self._next_slot_ms = None
        fired, upcoming = self.scheduler.fire_due(
            datetime.fromtimestamp(now_ms() / 1000, UTC), self.settings.relay_batch_size
        )
        if upcoming is not None:
            self._next_slot_ms = int(upcoming.timestamp() * 1000)
        return fired

    @staticmethod
    def _next_query_ms(marks: list[OutboxMark], now: int, age_ms: int, limit: int) -> int:
        """When the next query can find a stale mark: at once if this one hit its limit (more
        may wait behind), else when the oldest mark it found still fresh turns stale, and an
        outbox age from now at the latest (a mark set after this query is no older by then)."""
        if len(marks) >= limit:
            return 0
        fresh = [m.marked_at_ms for m in marks if m.marked_at_ms >= now - age_ms]
        return min([now, *fresh]) + age_ms

    def export_queue_depths(self) -> None:
        """Every lane's queue and DLQ: messages by state, and the oldest's age (labels: the
        queue's kind, main or dlq, and its lane).

        Each queue on its own: one whose read fails (denied, throttled, gone) is logged and its
        gauges are dropped until a read succeeds again, while the others are exported. Dropped,
        not left as they were: the alerts read these gauges (observability/slos.yaml), and a
        value frozen at its last read would look current, an age under the threshold keeping
        ConveyorTasksNotConsumed quiet however long the queue goes unread, a DLQ count of 0
        hiding dead letters. An absent series shows as no data on the dashboard, and the
        failure in the relay's log and its conveyor_aws_requests_total outcomes."""
        for queue in self.queue.urls:
            try:
                states = self.queue.depth(queue)
            except Exception:
                log.exception(
                    "reading a queue's depth failed; its gauges are dropped until it succeeds",
                    extra={"queue": queue.kind, "lane": queue.lane},
                )
                for state in DEPTH_STATES:
                    metrics.queue_messages.remove(queue.kind, queue.lane, state)
                metrics.queue_oldest_age_seconds.remove(queue.kind, queue.lane)
                continue
            for state, count in states.items():
                metrics.queue_messages.labels(queue.kind, queue.lane, state).set(count)
            age = self._backlog[queue].observe(states.get("visible", 0), time.monotonic())
            metrics.queue_oldest_age_seconds.labels(queue.kind, queue.lane).set(age)
            if queue.kind == QUEUE_DLQ:
                self._dlq_depth[queue.lane] = states.get("visible", 0)

    def compensate_dlq(self) -> int:
        """Compensate every message the redrive policy moved to a lane's DLQ
        (Lifecycle.compensate: its task marked DEAD, the message re-filed under the task's own
        group), every lane's DLQ in turn. Returns the tasks marked DEAD.

        It reads the whole DLQ (up to CONVEYOR_DLQ_SCAN_LIMIT), not a batch: dead letters stay
        there until an operator acts, so a batch would be the same dead letters every time and
        a message the redrive policy moved there later would never be looked at."""
        compensated = 0
        for dlq in DEAD_LETTER_QUEUES:
            # Each lane's DLQ on its own: one whose scan fails is logged and the others are
            # still scanned; what a scan held is given back as soon as that scan ends.
            looked_at: list[dict[str, Any]] = []  # to give back; re-filed ones are deleted
            try:
                compensated += self._compensate_one(dlq, looked_at)
            except Exception:
                log.exception(
                    "compensating a lane's DLQ failed; trying again next scan",
                    extra={"lane": dlq.lane},
                )
            finally:
                self.queue.unhide(looked_at)
        return compensated

    def _compensate_one(self, dlq: QueueId, looked_at: list[dict[str, Any]]) -> int:
        compensated = 0
        # Held until the scan ends, but no longer: the hold is also how long the messages
        # stay hidden if this relay dies mid-scan. A receive of 10 takes well under 0.1 s.
        hold = 30 + self._dlq_depth.get(dlq.lane, 0) // 100
        for raw in self.queue.peek(self.settings.dlq_scan_limit, queue=dlq, hold_seconds=hold):
            try:
                message = parse(raw)
            except MalformedMessage:
                looked_at.append(raw)
                continue
            if message.group_id == dead_letter_group(message.task_id):
                looked_at.append(raw)  # dead-lettered by a worker: the task is DEAD
                continue
            if self.tasks.compensate(message):
                metrics.dlq_compensated_total.inc()
                compensated += 1
        return compensated


if __name__ == "__main__":
    sys.exit(
        serve(RelaySettings, "conveyor-relay", lambda s, deps: Relay(s, deps.store, deps.queue).run)
    )
