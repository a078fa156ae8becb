"""A task's heartbeat loops start when their first beat is due, not when the task is claimed.

Each running task has two heartbeat loops, the lease's and the message's, each on a thread of
its own so that a slow DynamoDB cannot hold back the visibility extension, nor SQS the lease
(Worker._beat). They used to start at the claim and be joined at the end: for a task shorter
than a heartbeat interval, most of them, two thread starts, wake-ups and joins that never beat,
about 0.6 ms of the worker's CPU per no-op task at saturation, an eighth of it (issue 18). One
thread per worker (`HeartStarter`) now starts each loop half an interval before its first beat
unless the task has finished by then; the loop waits for the beat, as it would have done from
the claim. A loop that cannot be started is tried again until its task finishes, never
dropped. A task's `Hearts` stop and join whatever was started when it finishes, so no beat
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


# After a loop could not be started (no thread to be had), the starter tries it again this
# much later, until its task finishes: a loop dropped would leave the task running with its
# lease or its message unextended, for another worker to take over while it runs.
RETRY_SECONDS = 0.1


class Hearts:
    """One task's heartbeat loops: started by the HeartStarter when due, until `finish`.

    The loops waiting to start are held here, not in the starter's queue, and `finish` drops
    them: a finished task's state (its run, payload and all) is not kept until its loop's turn
    would have come."""

    def __init__(self, done: threading.Event) -> None:
        self._done = done  # set by `finish`: every loop stops at it
        self._waiting: dict[int, tuple[Callable[..., None], tuple[Any, ...]]] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def started(self) -> int:
        with self._lock:
            return len(self._threads)

    def finished(self) -> bool:
        return self._done.is_set()

    def add(self, key: int, loop: Callable[..., None], args: tuple[Any, ...]) -> None:
        with self._lock:
            if not self._done.is_set():
                self._waiting[key] = (loop, args)

    def start(self, key: int) -> None:
        """Start the loop `key` on a thread of its own, unless the task has finished. If the
        thread cannot be started, the loop stays waiting (and the error propagates)."""
        with self._lock:
            if self._done.is_set() or key not in self._waiting:
                return
            loop, args = self._waiting[key]
            thread = threading.Thread(target=loop, args=args, name="heartbeat", daemon=True)
            thread.start()
            del self._waiting[key]
            self._threads.append(thread)

    def finish(self) -> None:
        """The task is over: no loop starts from now on; wait for those that did to stop."""
        with self._lock:
            self._done.set()
            self._waiting.clear()
            threads = list(self._threads)
        for thread in threads:
            thread.join()


class HeartStarter:
    """Starts each scheduled heartbeat loop at its (monotonic) start time.

    It wakes for the earliest loop still due to start: a loop whose task finished first is
    dropped when it comes up, and scheduling one later than the earliest wakes nothing, so a
    saturated worker running short tasks wakes this thread about once a heartbeat interval,
    not once a task. Callers schedule a loop some time before its first beat (the loop waits
    for the beat itself), so loops that come due together, started one after another here,
    still beat on time.
    """

    def __init__(self) -> None:
        # (start time, key, the task's hearts): the loop itself waits in the Hearts
        self._due: list[tuple[float, int, Hearts]] = []
        self._keys = itertools.count()
        self._wake = threading.Condition()
        # A daemon, as the loops it starts: it runs for as long as the process, since a task
        # left running past the worker's shutdown keeps its heartbeats, as before.
        self._thread = threading.Thread(target=self._run, name="heart-starter", daemon=True)
        self._thread.start()

    def schedule(
        self, at: float, hearts: Hearts, loop: Callable[..., None], args: tuple[Any, ...]
    ) -> None:
        key = next(self._keys)
        hearts.add(key, loop, args)
        self._push(at, key, hearts)

    def _push(self, at: float, key: int, hearts: Hearts) -> None:
        entry = (at, key, hearts)
        with self._wake:
            heapq.heappush(self._due, entry)
            if self._due[0] is entry:  # earlier than what the starter waits for
                self._wake.notify()

    def _next(self) -> tuple[int, Hearts]:
        """The next loop to start, once its time has come."""
        with self._wake:
            while True:
                while self._due and self._due[0][2].finished():
                    heapq.heappop(self._due)  # its task ended before its loop started
                if not self._due:
                    self._wake.wait()
                    continue
                wait = self._due[0][0] - time.monotonic()
                if wait <= 0:
                    _, key, hearts = heapq.heappop(self._due)
                    return key, hearts
                self._wake.wait(wait)

    def _run(self) -> None:
        while True:
            try:
                key, hearts = self._next()
                try:
                    hearts.start(key)
                except Exception:  # e.g. no thread could be started: try it again shortly
                    log.exception("could not start a heartbeat loop; trying again")
                    self._push(time.monotonic() + RETRY_SECONDS, key, hearts)
            except Exception:  # every running task's heartbeats depend on this thread
                log.exception("heartbeat starter failed; going on")
                time.sleep(RETRY_SECONDS)
