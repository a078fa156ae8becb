"""Priority lanes on real queues: a task travels in its lane's queue and DLQ, the operator's
commands cover every lane, and a redrive goes back to the task's lane."""

from __future__ import annotations

import json
import threading

import pytest
from botocore.exceptions import ClientError
from conveyor import ops as ops_mod
from conveyor.domain import DEFAULT_LANE, LANES, TaskState
from conveyor.queue import DeleteBatcher, QueueId, TaskQueue, parse
from conveyor.queue import dlq as dlq_of
from conveyor.queue import main as main_of
from conveyor.settings import WorkerSettings
from conveyor.tasks.lifecycle import Lifecycle
from conveyor.telemetry import metrics
from conveyor.worker.runner import Worker
from prometheus_client import REGISTRY
from store_support import dead, metric, relay_on, submit
from support import wait_for

S = TaskState


def test_a_high_task_is_sent_to_the_high_lanes_queue_only(store, queue, raw):
    task = submit(store, lane="high")
    assert store.get(task.task_id).lane == "high"
    Lifecycle(store, queue).enqueue(task.task_id, "sent")
    high_url, _ = raw.res.lane_urls["high"]
    [message] = raw.receive(high_url)
    assert json.loads(message["Body"])["task_id"] == task.task_id
    assert raw.depth(raw.res.queue_url) == (0, 0)


def test_batched_sends_go_each_to_their_lanes_queue(store, queue, raw):
    tasks = [submit(store, lane=lane) for lane in (*LANES, *LANES)]
    assert queue.send_refs(tasks) == set()
    for lane in LANES:
        got = {json.loads(m["Body"])["task_id"] for m in raw.receive(raw.res.lane_urls[lane][0])}
        assert got == {t.task_id for t in tasks if t.lane == lane}


def test_a_received_message_remembers_its_lane_and_is_deleted_there(queue, store, raw):
    batcher = DeleteBatcher(queue, linger=0.05)
    try:
        for lane in LANES:
            task = submit(store, lane=lane)
            queue.send(task.task_id, task.task_type, tenant=task.tenant, lane=lane)
            [received] = queue.receive(10, 1, 30, queue=main_of(lane))
            message = parse(received)
            assert message.queue == main_of(lane)
            batcher.add(message.receipt_handle, queue=message.queue)
    finally:
        batcher.close()
    for lane in LANES:
        url = raw.res.lane_urls[lane][0]
        wait_for(lambda url=url: raw.depth(url) == (0, 0), 10, f"{lane}'s message deleted")


def test_a_dead_high_task_goes_to_the_high_dlq_and_a_redrive_back_to_the_high_lane(ops, queue, raw):
    task = dead(ops.store, submit(ops.store, lane="high"))
    queue.dead_letter(task, "boom")
    high_queue, high_dlq = raw.res.lane_urls["high"]
    assert raw.depth(high_dlq) == (1, 0)
    assert raw.depth(raw.res.dlq_url) == (0, 0)

    listing = ops_mod.dlq_inspect(ops, 10)
    assert [(e.task_id, e.lane) for e in listing.entries] == [(task.task_id, "high")]
    stats = ops_mod.queue_stats(ops)
    assert stats["high/dlq"]["visible"] == 1
    assert set(stats) == {"main", "dlq", "high/main", "high/dlq"}

    [result] = ops_mod.dlq_redrive(ops, [task.task_id], limit=10)
    assert result.outcome == "redriven"
    assert ops.store.get(task.task_id).state == S.QUEUED
    [message] = raw.receive(high_queue)
    assert json.loads(message["Body"])["task_id"] == task.task_id
    assert raw.depth(high_dlq) == (0, 0)
    assert raw.depth(raw.res.queue_url) == (0, 0)


def test_the_relay_exports_depth_and_age_per_lane_and_compensates_every_dlq(
    settings, store, queue, raw
):
    stuck = submit(store, lane="high")
    # What SQS's redrive policy does: the message moved to the lane's DLQ as it was.
    queue.send(stuck.task_id, stuck.task_type, tenant=stuck.tenant, queue=dlq_of("high"))
    relay = relay_on(settings, store, queue)
    relay.sweep()
    assert metric("conveyor_queue_messages", queue="dlq", lane="high", state="visible") >= 0
    assert store.get(stuck.task_id).state == S.DEAD
    for lane in LANES:
        for kind in ("main", "dlq"):
            labels = {"queue": kind, "lane": lane}
            assert metric("conveyor_queue_oldest_age_seconds", **labels) >= 0
    # Re-filed in the high DLQ under the task's own group.
    [refiled] = raw.receive(raw.res.lane_urls["high"][1])
    assert refiled["Attributes"]["MessageGroupId"] == f"dead#{stuck.task_id}"


def _gone(queue: TaskQueue, queue_id: QueueId) -> str:
    """A URL like `queue_id`'s, of a queue that does not exist: every call on it fails."""
    return queue.urls[queue_id] + "-gone"


def test_a_lane_whose_receive_fails_does_not_keep_the_worker_from_the_others(
    aws_backend, settings, store, queue, monkeypatch
):
    monkeypatch.setitem(queue.urls, main_of("high"), _gone(queue, main_of("high")))
    task = submit(store)
    queue.send(task.task_id, task.task_type, tenant=task.tenant)
    values = {
        **aws_backend.env(),
        "table_name": settings.table_name,
        **settings.lane_url_settings(),
        "metrics_listen": "127.0.0.1:0",
    }
    worker = Worker(WorkerSettings(**values), store, queue, {})
    got, first = worker._short_polls(LANES, 4, threading.Event())
    assert first == DEFAULT_LANE
    assert [parse(m).task_id for m in got] == [task.task_id]
    # Every lane failing still reaches the poller, which backs off.
    monkeypatch.setitem(queue.urls, main_of(DEFAULT_LANE), _gone(queue, main_of(DEFAULT_LANE)))
    with pytest.raises(ClientError):
        worker._short_polls(LANES, 4, threading.Event())


def test_a_lane_whose_queues_fail_does_not_stop_the_relay_exporting_or_compensating_the_others(
    settings, store, queue, monkeypatch
):
    for queue_id in (main_of("high"), dlq_of("high")):
        monkeypatch.setitem(queue.urls, queue_id, _gone(queue, queue_id))
    stuck = submit(store)
    # What SQS's redrive policy does: the message moved to the default lane's DLQ as it was.
    queue.send(stuck.task_id, stuck.task_type, tenant=stuck.tenant, queue=dlq_of(DEFAULT_LANE))
    stale = -7.0
    for lane in LANES:
        for kind in ("main", "dlq"):
            metrics.queue_oldest_age_seconds.labels(kind, lane).set(stale)
            metrics.queue_messages.labels(kind, lane, "visible").set(stale)
    relay_on(settings, store, queue).sweep()
    assert store.get(stuck.task_id).state == S.DEAD
    for kind in ("main", "dlq"):
        # The failed lane's gauges are dropped, not left at a value that looks current.
        for name in ("conveyor_queue_oldest_age_seconds", "conveyor_queue_messages"):
            labels = {"queue": kind, "lane": "high"}
            if name == "conveyor_queue_messages":
                labels["state"] = "visible"
            assert REGISTRY.get_sample_value(name, labels) is None, (name, labels)
        labels = {"queue": kind, "lane": DEFAULT_LANE}
        assert metric("conveyor_queue_oldest_age_seconds", **labels) >= 0
        assert metric("conveyor_queue_messages", state="visible", **labels) >= 0


def test_unhiding_goes_on_past_a_message_that_cannot_be_unhidden(store, queue, raw):
    tasks = [submit(store) for _ in range(2)]
    for task in tasks:
        queue.send(task.task_id, task.task_type, queue=dlq_of(DEFAULT_LANE), group_id=task.task_id)
    first, second = queue.peek(10, queue=dlq_of(DEFAULT_LANE), hold_seconds=30)
    assert raw.depth(raw.res.dlq_url) == (0, 2)
    stale = {**first, "ReceiptHandle": "no-such-handle"}
    queue.unhide([first, stale, second])
    assert raw.depth(raw.res.dlq_url) == (2, 0)
