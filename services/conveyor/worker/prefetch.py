"""Messages received ahead of a free slot, so that receives come in full batches under load.

A receive that asks only for the free slots carries a few messages (≤ 4 with 4 slots), so a
busy worker made about one receive per task or two. Here the poller asks for up to 10, and
what the slots cannot start at once waits, in order, for the next free slot. Bounded so that
nothing waits long with its message invisible: no more wait than the slots finish, at their
measured pace, within `horizon` seconds (none before a first task has finished), and the
worker releases instead of starting a message that waited past its limit (see runner).

Messages beyond that room are refused when they arrive (the caller releases them at once): a
long poll left open while the worker got busy may bring messages when every slot is taken,
and each would otherwise sit invisible behind runs of any length. Messages that waited past
the limit are handed back by `expired` without a slot having to free first.

Waiting messages are unclaimed: the task is untouched, so a SIGKILL loses nothing (the
messages turn visible when their visibility timeout ends) and a shutdown gives them back.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

MAX_RECEIVE = 10  # SQS's limit per ReceiveMessage
SMOOTHING = 0.2  # weight of the newest duration in the moving average


def prefetch_bound(slots: int, slot_seconds: float | None, horizon: float) -> int:
    """How many messages may wait for a slot: what `slots` finish within `horizon` at
    `slot_seconds` a message (unknown: none), at most one receive's worth."""
    if not slot_seconds:
        return 0
    return min(MAX_RECEIVE, int(slots * horizon / slot_seconds))


def receive_size(free: int, waiting: int, bound: int) -> int:
    """How many messages the next receive asks for: none while more wait than the free slots
    take (the batch would not fit yet), else what the free slots and the bound leave room for."""
    if waiting > free:
        return 0
    return min(MAX_RECEIVE, free + bound - waiting)


@dataclass(frozen=True)
class Waiting:
    raw: dict[str, Any]
    received_at: float  # monotonic time of its receive: its visibility runs from about then


class Prefetch:
    """The waiting messages, the slots' measured pace, and how many run."""

    def __init__(self, slots: int, horizon: float) -> None:
        self._slots = slots
        self._horizon = horizon
        self._changed = threading.Condition()
        self._waiting: deque[Waiting] = deque()
        self._running = 0
        self._slot_seconds: float | None = None
        self._closed = False

    def _size(self) -> int:
        bound = prefetch_bound(self._slots, self._slot_seconds, self._horizon)
        return receive_size(self._slots - self._running, len(self._waiting), bound)

    def room(self, timeout: float) -> int:
        """The next receive's size, waiting up to `timeout` for it to be more than 0."""
        with self._changed:
            self._changed.wait_for(lambda: self._size() > 0 or self._closed, timeout)
            return 0 if self._closed else self._size()

    def _capacity(self) -> int:
        """How many more may wait: the free slots plus the bound, less those already waiting."""
        bound = prefetch_bound(self._slots, self._slot_seconds, self._horizon)
        return max(0, self._slots - self._running + bound - len(self._waiting))

    def put(self, raws: list[dict[str, Any]], received_at: float) -> list[dict[str, Any]]:
        """Queue what of `raws` there is room for (all of them if it was asked for); returns
        the rest, all of them if closed, for the caller to release."""
        with self._changed:
            if self._closed:
                return raws
            room = self._capacity()
            self._waiting.extend(Waiting(raw, received_at) for raw in raws[:room])
            self._changed.notify_all()
            return raws[room:]

    def expired(self, limit: float, now: float) -> list[dict[str, Any]]:
        """Remove and return the messages that have waited more than `limit` seconds by `now`
        (monotonic), for the caller to release."""
        with self._changed:
            old = [w.raw for w in self._waiting if now - w.received_at > limit]
            if old:
                self._waiting = deque(w for w in self._waiting if now - w.received_at <= limit)
                self._changed.notify_all()
            return old

    def take(self, timeout: float) -> Waiting | None:
        """The oldest waiting message, counted as running; None if none came within `timeout`."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._waiting or self._closed, timeout):
                return None
            if self._closed:
                return None
            self._running += 1
            self._changed.notify_all()
            return self._waiting.popleft()

    def finished(self, seconds: float | None) -> None:
        """A taken message let its slot go after `seconds` (None: it did not run)."""
        with self._changed:
            self._running -= 1
            if seconds is not None:
                old = self._slot_seconds
                self._slot_seconds = seconds if old is None else old + SMOOTHING * (seconds - old)
            self._changed.notify_all()

    def close(self) -> list[dict[str, Any]]:
        """Stop queueing; returns the messages still waiting, for the caller to release."""
        with self._changed:
            self._closed = True
            left = [w.raw for w in self._waiting]
            self._waiting.clear()
            self._changed.notify_all()
            return left
