"""A task's heartbeat loops start when their first beat is due, not when the task is claimed.

Each running task has two heartbeat loops, the lease's and the message's, each on a thread of
its own so that a slow DynamoDB cannot hold back the visibility extension, nor SQS the lease
(Worker._beat). They used to start at the claim and be joined at the end: for a task shorter
than a heartbeat interval, most of them, two thread starts, wake-ups and joins that never beat,
about 0.6 ms of the worker's CPU per no-op task at saturation, an eighth of it (issue 18). One
thread per worker (`HeartStarter`) now holds each loop until its first beat is due and starts
it then unless the task has finished; the loop then beats at once, as it would have done after
waiting. A task's `Hearts` stop and join whatever was started when it finishes, so no beat
outlives its task, as before.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Hearts:
    """One task's heartbeat threads: started by the HeartStarter when due, until `finish`."""

    def __init__(self, done: threading.Event) -> None:
        self._done = done  # set by `finish`: every loop stops at it
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def started(self) -> int:
        with self._lock:
            return len(self._threads)

    def finished(self) -> bool:
        return self._done.is_set()

    def start(self, loop: Callable[..., None], args: tuple[Any, ...]) -> None:
        """Start `loop(*args)` on a thread of its own, unless the task has finished."""
        with self._lock:
            if self._done.is_set():
                return
            thread = threading.Thread(target=loop, args=args, name="heartbeat", daemon=True)
            thread.start()
            self._threads.append(thread)

    def finish(self) -> None:
        """The task is over: no loop starts from now on; wait for those that did to stop."""
        with self._lock:
            self._done.set()
            threads = list(self._threads)
        for thread in threads:
            thread.join()


class HeartStarter:
    """Starts each scheduled heartbeat loop at its first beat's (monotonic) time.

    It wakes for the earliest loop still due to start: a loop whose task finished first is
    dropped when it comes up, and scheduling one later than the earliest wakes nothing, so a
    saturated worker running short tasks wakes this thread about once a heartbeat interval,
    not once a task.
    """

    def __init__(self) -> None:
        # (first beat, tie-breaker, the task's hearts, loop, its arguments)
        self._due: list[tuple[float, int, Hearts, Callable[..., None], tuple[Any, ...]]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        # A daemon, as the loops it starts: it runs for as long as the process, since a task
        # left running past the worker's shutdown keeps its heartbeats, as before.
        self._thread = threading.Thread(target=self._run, name="heart-starter", daemon=True)
        self._thread.start()

    def schedule(
        self, at: float, hearts: Hearts, loop: Callable[..., None], args: tuple[Any, ...]
    ) -> None:
        entry = (at, next(self._order), hearts, loop, args)
        with self._wake:
            heapq.heappush(self._due, entry)
            if self._due[0] is entry:  # earlier than what the starter waits for
                self._wake.notify()

    def _next(self) -> tuple[Hearts, Callable[..., None], tuple[Any, ...]]:
        """The next loop to start, once its time has come."""
        with self._wake:
            while True:
                while self._due and self._due[0][2].finished():
                    heapq.heappop(self._due)  # its task ended before its first beat
                if not self._due:
                    self._wake.wait()
                    continue
                wait = self._due[0][0] - time.monotonic()
                if wait <= 0:
                    _, _, hearts, loop, args = heapq.heappop(self._due)
                    return hearts, loop, args
                self._wake.wait(wait)

    def _run(self) -> None:
        while True:
            hearts, loop, args = self._next()
            try:
                hearts.start(loop, args)
            except Exception:  # e.g. no thread could be started: the next one may be
                log.exception("could not start a heartbeat loop")
