"""Which lane a worker's receive asks first: high first, without starving the lanes below.

The lanes are domain.LANES, highest first. The rule (README "Priority lanes"):

- A receive asks the lanes in that order with short polls (no wait), each for what the lanes
  before it left of the batch (the free slots and prefetch room): a lane with enough
  messages fills it, and the lanes after it are not asked. It counts as served by the first
  lane that had messages.
- Every lane but the first counts the receives served by a lane above it since its last turn.
  Once that count reaches K (CONVEYOR_LANE_TURN_AFTER, default 3), the next receive asks that
  lane first (its turn), then the others in order; a turn is spent whether or not the lane had
  messages (an empty lane costs one empty short poll per K + 1 receives, not one per receive).
  So while the high lane is saturated, a default lane with messages is served by at least one
  receive in K + 1 (at least 1/(K + 1) of the receives, a quarter by default) and the high lane
  by the rest; while the high lane has fewer messages than a receive takes, the default lane
  fills the rest of each receive. A high-lane task waits at most for the receive under way and
  the messages already waiting in the prefetch (conveyor.worker.prefetch keeps them in arrival
  order).
- When every lane's short poll came back empty, the worker is idle: it long-polls every lane
  at once (one request each, side by side, CONVEYOR_POLL_WAIT_SECONDS), so a task arriving in
  any lane is received at once, and keeps long-polling, without short polls, until a long poll
  brings messages. It goes back to short polls as soon as one does: the other lanes' long polls
  go on waiting (a later idle round keeps them rather than asking again) and put their
  messages in the prefetch when they come.

Idle costs one ReceiveMessage per lane per poll wait (two lanes, 5 s: 0.4 a second per worker,
twice the single queue's 0.2). Busy, a receive costs one short poll per lane it has to ask:
one more (empty) poll of the high lane before the default lane's while only the default lane
has messages.
"""

from __future__ import annotations

from collections.abc import Sequence


class LaneTurns:
    """The order of the next receive's lanes, and what each receive was served by."""

    def __init__(self, lanes: Sequence[str], turn_after: int) -> None:
        if not lanes:
            raise ValueError("no lanes")
        self._lanes = tuple(lanes)
        self._turn_after = turn_after
        # Per lane below the first: receives served by a lane above it since its last turn.
        self._passed_over = dict.fromkeys(self._lanes[1:], 0)

    def order(self) -> tuple[str, ...]:
        """The lanes in the order the next receive asks them: the first lane whose turn it is
        (in LANES order), then the others in LANES order."""
        due = [lane for lane, n in self._passed_over.items() if n >= self._turn_after]
        if not due:
            return self._lanes
        return (due[0], *(lane for lane in self._lanes if lane != due[0]))

    def served(self, order: Sequence[str], lane: str | None) -> None:
        """The receive asked `order` and was served by `lane` (None: every lane was empty)."""
        first = order[0]
        rank = {name: i for i, name in enumerate(self._lanes)}
        for name in self._passed_over:
            if name in (first, lane):
                self._passed_over[name] = 0  # its turn, taken or spent, or it was served
            elif lane is not None and rank[lane] < rank[name]:
                self._passed_over[name] += 1
