"""How long the worker's poller waits for a batch to gather before its next receive
(conveyor.worker.runner.linger_seconds): fuller receives at a modest rate, no wait while the
queue is behind, a shorter one the faster messages arrive."""

from __future__ import annotations

import pytest
from conveyor.worker.runner import linger_seconds

NOW = 1_700_000_000_000
LINGER = 0.5
BATCH = 10


def received(*ages_ms: int) -> list[dict[str, object]]:
    """Raw messages as SQS returns them, each sent `age` ms before NOW."""
    return [
        {"MessageId": str(i), "Attributes": {"SentTimestamp": str(NOW - age)}}
        for i, age in enumerate(ages_ms)
    ]


def wait(raw: list[dict[str, object]], asked: int) -> float:
    return linger_seconds(raw, asked, NOW, LINGER, BATCH)


def test_a_receive_with_less_than_it_asked_for_lingers():
    assert wait(received(300, 20), 5) == LINGER
    assert wait([], 10) == LINGER  # a long poll that found nothing


def test_a_full_receive_of_messages_sent_just_now_lingers_at_a_modest_rate():
    # Three free slots while the last batch still runs, three messages that have just arrived
    # 100 ms apart (10 a second): receiving again at once would take the one that comes next.
    assert wait(received(230, 130, 30), 3) == LINGER
    assert wait(received(30), 1) == LINGER


def test_the_faster_messages_arrive_the_shorter_the_wait():
    # Four sent over 30 ms (100 a second): ten more arrive in about 0.1 s.
    assert wait(received(40, 30, 20, 10), 4) == pytest.approx(0.1)


def test_a_full_receive_from_a_queue_that_is_behind_does_not_linger():
    # Even the youngest message waited longer than a linger: more are waiting behind it.
    assert wait(received(4_000, 2_500, 600), 3) == 0
    assert wait(received(*[900] * 10), 10) == 0
