"""How many messages the worker asks for and lets wait (conveyor.worker.prefetch)."""

from __future__ import annotations

import pytest
from conveyor.worker.prefetch import Prefetch, prefetch_bound, receive_size


def test_nothing_waits_before_the_slots_pace_is_known_or_when_it_is_slow():
    assert prefetch_bound(4, None, 5.0) == 0
    assert prefetch_bound(4, 30.0, 5.0) == 0  # a task outlasts the horizon
    assert prefetch_bound(4, 5.0, 5.0) == 4
    assert prefetch_bound(4, 0.05, 5.0) == 10  # one receive's worth at most


@pytest.mark.parametrize(
    ("free", "waiting", "bound", "asked"),
    [
        (4, 0, 0, 4),  # no prefetch: the free slots, as before
        (0, 0, 0, 0),
        (0, 0, 10, 10),  # slots busy, nothing waits: a full batch to wait for them
        (0, 1, 10, 0),  # more wait than the slots take: not yet
        (2, 2, 10, 10),
        (4, 0, 10, 10),  # never more than SQS gives in one receive
    ],
)
def test_a_receive_asks_for_a_full_batch_once_the_waiting_fit_the_free_slots(
    free, waiting, bound, asked
):
    assert receive_size(free, waiting, bound) == asked


def test_the_prefetch_hands_out_in_order_and_gives_back_what_waits_when_closed():
    prefetch = Prefetch(slots=1, horizon=1.0)
    assert prefetch.room(timeout=0) == 1
    prefetch.put([{"n": 0}], received_at=0.0)
    assert prefetch.room(timeout=0) == 0  # one waits for the only slot
    assert prefetch.take(timeout=0).raw == {"n": 0}
    prefetch.finished(0.1)  # pace: 10 a second for 1 s, capped at 10
    assert prefetch.room(timeout=0) == 10
    prefetch.put([{"n": 1}, {"n": 2}], received_at=0.0)
    assert prefetch.close() == [{"n": 1}, {"n": 2}]
    assert prefetch.put([{"n": 3}], received_at=0.0) == [{"n": 3}]
    assert prefetch.take(timeout=0) is None


def test_messages_beyond_the_room_are_refused_for_release_at_once():
    """A long poll left open while the slots filled brings a message: with every slot busy and
    no prefetch bound yet, it must come back to be released, not wait behind the runs."""
    prefetch = Prefetch(slots=1, horizon=1.0)
    prefetch.put([{"n": 0}], received_at=0.0)
    assert prefetch.take(timeout=0).raw == {"n": 0}  # the only slot runs a long task
    assert prefetch.put([{"n": 1}], received_at=0.0) == [{"n": 1}]
    prefetch.finished(0.5)  # pace: 2 a second for 1 s, so 2 may wait with the slot busy
    prefetch.put([{"n": 2}], received_at=0.0)
    assert prefetch.take(timeout=0).raw == {"n": 2}  # the slot is busy again
    assert prefetch.put([{"n": 3}, {"n": 4}, {"n": 5}], received_at=0.0) == [{"n": 5}]


def test_messages_past_their_wait_limit_are_handed_back_without_a_free_slot():
    prefetch = Prefetch(slots=1, horizon=10.0)
    prefetch.put([{"n": 0}], received_at=0.0)
    prefetch.take(timeout=0)
    prefetch.finished(1.0)  # 10 may wait
    prefetch.put([{"n": 1}], received_at=0.0)
    prefetch.put([{"n": 2}], received_at=5.0)
    assert prefetch.expired(limit=3.0, now=4.0) == [{"n": 1}]
    assert prefetch.expired(limit=3.0, now=4.0) == []
    assert prefetch.take(timeout=0).raw == {"n": 2}
