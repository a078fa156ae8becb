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

Any drop restarts the clock, a spurious one too (the count is approximate): that delays a page
by the time since the dip, never pages falsely. Waiting for the next sweeps to confirm a drop
was tried and taken back (issue 17): a slow but moving queue whose counts repeat like 2, 3, 3
or 1, 1, 0 never confirms one, and its age climbed without bound into a false page.
"""

from __future__ import annotations


class BacklogClock:
    """The age of a queue's head from successive visible counts (one per sweep)."""

    def __init__(self) -> None:
        self._visible = 0
        self._waiting_since: float | None = None

    def observe(self, visible: int, now: float) -> float:
        """Record the count read at `now` (seconds); return the oldest message's age."""
        if visible == 0:
            self._waiting_since = None
        elif self._waiting_since is None or visible < self._visible:
            self._waiting_since = now
        self._visible = visible
        return 0.0 if self._waiting_since is None else now - self._waiting_since
