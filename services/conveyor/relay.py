"""`python -m conveyor.relay`: the outbox relay, the crash safety net of the submit path.

The API commits a task with an outbox mark and then sends its message. If the API dies in
between, or SQS refuses the send, the mark stays. Each sweep the relay sends the message of
every mark older than CONVEYOR_OUTBOX_AGE_SECONDS (same MessageDeduplicationId as the API
used, so a send that did land is collapsed by SQS) and moves the task to QUEUED.

The relay also exports the queue-depth gauges the alerts use, and runs the DLQ compensator:
a message the queue's redrive policy moved to the DLQ (a worker that crashed on it too often)
belongs to a task that is not yet terminal; the compensator marks it DEAD so that the API never
reports it RUNNING forever.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading

from conveyor.domain import TaskState
from conveyor.process import serve
from conveyor.queue import QUEUE_DLQ, MalformedMessage, TaskQueue, parse
from conveyor.settings import RelaySettings
from conveyor.store import Conflict, TaskStore, now_ms
from conveyor.telemetry import metrics

log = logging.getLogger("conveyor.relay")


class Relay:
    def __init__(self, settings: RelaySettings, store: TaskStore, queue: TaskQueue) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue

    def run(self, stop: threading.Event) -> None:
        while True:
            try:
                self.sweep()
            except Exception:
                log.exception("relay sweep failed; trying again next interval")
            if stop.wait(self.settings.relay_interval_seconds):
                return

    def sweep(self) -> int:
        """One pass: relay stale marks, refresh gauges, compensate DLQ. Returns tasks relayed."""
        relayed = self.relay_stale_marks()
        self.export_queue_depths()
        self.compensate_dlq()
        return relayed

    def relay_stale_marks(self) -> int:
        now = now_ms()
        marks = self.store.outbox_marks(now + 1, self.settings.relay_batch_size)
        metrics.outbox_pending_tasks.set(len(marks))
        metrics.outbox_oldest_age_seconds.set((now - marks[0].marked_at_ms) / 1000 if marks else 0)
        cutoff = now - int(self.settings.outbox_age_seconds * 1000)
        relayed = 0
        for mark in marks:
            if mark.marked_at_ms >= cutoff:
                break
            task = self.store.get(mark.task_id)
            if task is None or task.state != TaskState.PENDING:
                continue
            self.queue.send(task.task_id, task.task_type, traceparent=task.traceparent)
            # On Conflict a worker claimed it or it was cancelled: the mark is gone either way.
            with contextlib.suppress(Conflict):
                self.store.transition(task, TaskState.QUEUED, detail="sent by the outbox relay")
            metrics.outbox_relayed_total.inc()
            relayed += 1
            log.info("relayed outbox mark", extra={"task_id": task.task_id})
        return relayed

    def export_queue_depths(self) -> None:
        for queue, states in self.queue.depths().items():
            for state, count in states.items():
                metrics.queue_messages.labels(queue, state).set(count)

    def compensate_dlq(self) -> int:
        """Mark DEAD every non-terminal task with a message in the DLQ. Every group's head is
        looked at (up to the batch size), not just the first page of 10, so messages of tasks
        already DEAD cannot hide one that is stuck; every message is given back afterwards."""
        raws = self.queue.peek(self.settings.relay_batch_size, queue=QUEUE_DLQ)
        compensated = 0
        try:
            for raw in raws:
                try:
                    message = parse(raw)
                except MalformedMessage:
                    continue
                compensated += self._mark_dead(message.task_id)
        finally:
            self.queue.unhide(raws, queue=QUEUE_DLQ)
        return compensated

    def _mark_dead(self, task_id: str) -> int:
        task = self.store.get(task_id)
        if task is None or task.state.terminal:
            return 0
        try:
            self.store.transition(
                task,
                TaskState.DEAD,
                detail="moved to the DLQ by the queue's redrive policy",
                set_values={"last_error": task.last_error or "redrive policy: too many receives"},
                remove=("lease_owner", "lease_expires_at"),
            )
        except Conflict:
            return 0
        metrics.dlq_compensated_total.inc()
        metrics.tasks_completed_total.labels(task.task_type, "dead").inc()
        return 1


if __name__ == "__main__":
    sys.exit(
        serve(RelaySettings, "conveyor-relay", lambda s, deps: Relay(s, deps.store, deps.queue).run)
    )
