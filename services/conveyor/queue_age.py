"""How long the oldest visible message of a queue has waited, from the depths the relay reads.

Queue delay measured when a task starts (conveyor_task_queue_delay_seconds) cannot see tasks
that never start: with every worker stalled it paged only once they came back (issue 17). What
a user feels is the age of the oldest waiting task. SQS publishes that age only to CloudWatch
(ApproximateAgeOfOldestMessage), and looking at a message would count as a receive towards the
redrive policy's maxReceiveCount, so the relay infers it from the visible count it reads every
sweep: while consumers take messages, the count drops or reaches 0 sweep after sweep; while
nothing takes them it never drops, so the oldest message has waited at least since the last
sweep at which it did. For a stalled consumer this is the stall's age (what the page is for);
it reads about 0 while consumers keep up, and under-reads a slow but moving consumer, which
the freshness SLO measures at start.

A drop restarts the clock only once it is confirmed. The count is approximate (SQS says so):
one read that dips below the truth and comes back would restart the clock and delay
ConveyorTasksNotConsumed by the time since the dip (issue 17). A drop counts when the next
read is still below the count before it (restarting the clock at the drop), or when the read
after that drops again (restarting it there: consumers that take messages as fast as they
come make the count go up and down, and two drops in three reads are consumption, not one bad
read). Until then the clock runs on, so a real drop shows one or two sweeps late; a one-read
dip, which comes back to where it was and goes no lower, does not restart it at all. A real
take by a consumer that then dies (its receive hides the messages for a visibility timeout)
still restarts it: the clock cannot tell it from consumption.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class _Drop:
    """A drop of the visible count not yet confirmed."""

    at: float  # when the lower count was read
    before: int  # the count read before it
    visible: int  # the lower count
    reads: int = 0  # reads since it


class BacklogClock:
    """The age of a queue's head from successive visible counts (one per sweep)."""

    def __init__(self) -> None:
        self._visible = 0
        self._waiting_since: float | None = None
        self._drop: _Drop | None = None

    def observe(self, visible: int, now: float) -> float:
        """Record the count read at `now` (seconds); return the oldest message's age."""
        dropped = visible < self._visible
        drop, self._drop = self._drop, None
        if drop is not None and drop.reads == 0 and visible < drop.before:
            self._restart(drop.at, drop.visible)  # the drop held
        elif drop is not None and drop.reads == 1 and dropped:
            self._restart(now, visible)  # a second drop: consumers are taking messages
            dropped = False
        elif drop is not None and drop.reads == 0:
            self._drop = _Drop(drop.at, drop.before, drop.visible, reads=1)
        if dropped:
            self._drop = _Drop(now, self._visible, visible)
        if self._waiting_since is None and visible > 0:
            self._waiting_since = now
        self._visible = visible
        return 0.0 if self._waiting_since is None else now - self._waiting_since

    def _restart(self, at: float, visible: int) -> None:
        """The messages visible at `at` came no earlier than it; none were visible if 0."""
        self._waiting_since = at if visible > 0 else None
