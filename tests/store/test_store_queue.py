"""TaskQueue against real FIFO queues: message shape, trace context, dedup, message groups."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid

import pytest
from conveyor.queue import DeleteBatcher, MalformedMessage, parse
from conveyor.queue import dlq as dlq_of
from conveyor.queue import main as main_of
from store_support import metric, submit
from support import wait_for

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _partner(queue, task_id: str, task_type: str, *, same_group: bool) -> str:
    """Another task id whose message group is (or is not) the one of `task_id`."""
    group = queue.group_id(task_id, task_type, "t")
    for _ in range(1000):
        other = uuid.uuid4().hex
        if (queue.group_id(other, task_type, "t") == group) == same_group:
            return other
    raise AssertionError("no such task id found")


def test_send_and_parse_round_trip(queue, raw):
    task_id = uuid.uuid4().hex
    message_id = queue.send(task_id, "demo.sleep", tenant="t", traceparent=TRACEPARENT)
    [received] = queue.receive(10, 0, 30)
    message = parse(received)
    assert (message.message_id, message.task_id, message.task_type) == (
        message_id,
        task_id,
        "demo.sleep",
    )
    assert message.receive_count == 1
    assert message.attributes == {"traceparent": TRACEPARENT}
    assert message.error == ""
    assert json.loads(received["Body"]) == {"task_id": task_id, "task_type": "demo.sleep"}


def test_dlq_messages_carry_the_error_truncated(queue, raw):
    task_id = uuid.uuid4().hex
    queue.send(task_id, "t", tenant="t", queue=dlq_of(), dedup_id=f"{task_id}.3", error="e" * 5000)
    [received] = raw.receive(raw.res.dlq_url)
    assert parse(received).error == "e" * 1024
    assert received["Attributes"]["MessageDeduplicationId"] == f"{task_id}.3"


def test_the_task_id_is_the_default_dedup_id(queue, raw):
    task_id = uuid.uuid4().hex
    queue.send(task_id, "t", tenant="t")
    queue.send(task_id, "t", tenant="t")  # the relay re-sending what the API sent: accepted...
    assert raw.depth(raw.res.queue_url) == (1, 0)  # ...and dropped


def test_a_busy_group_does_not_hold_back_the_other_groups_of_its_type(queue):
    busy = uuid.uuid4().hex
    behind = _partner(queue, busy, "demo.sleep", same_group=True)
    other = _partner(queue, busy, "demo.sleep", same_group=False)
    for task_id in (busy, behind, other):
        queue.send(task_id, "demo.sleep", tenant="t")

    [first] = queue.receive(1, 0, 30)  # in flight, e.g. a poison task backing off
    assert parse(first).task_id == busy
    later = [parse(m).task_id for m in queue.receive(10, 0, 30)]
    assert later == [other]  # only the busy group waits; the rest of the type flows


def test_depths_by_state(queue):
    for _ in range(3):
        queue.send(uuid.uuid4().hex, "t", tenant="t")
    queue.receive(1, 0, 30)
    depths = queue.depths()
    assert depths[main_of()]["visible"] + depths[main_of()]["inflight"] == 3
    assert depths[main_of()]["inflight"] == 1
    assert depths[dlq_of()] == {"visible": 0, "inflight": 0, "delayed": 0}


@pytest.mark.parametrize("body", ["not json", "[1, 2]", '{"task_id": "x"}', "null"])
def test_malformed_bodies_are_refused(body):
    with pytest.raises(MalformedMessage):
        parse({"MessageId": "m", "ReceiptHandle": "r", "Body": body})


def test_a_snapshot_carries_the_committed_task_byte_for_byte(store, queue):
    task = submit(store, payload=bytes(range(256)) * 64)  # 16 KiB, every byte value
    queue.send(task.task_id, task.task_type, tenant=task.tenant, snapshot=task)
    [received] = queue.receive(10, 0, 30)
    assert parse(received).snapshot == dataclasses.replace(task, events=())  # no history


@pytest.mark.parametrize(
    "snapshot",
    [{"task_id": "x"}, "not a task", {"payload": "%%%"}],
)
def test_a_message_with_a_broken_snapshot_still_parses_without_one(queue, snapshot):
    task_id = uuid.uuid4().hex
    body = json.dumps({"task_id": task_id, "task_type": "t", "task": snapshot})
    raw = {"MessageId": "m", "ReceiptHandle": "r", "Body": body}
    message = parse(raw)
    assert (message.task_id, message.snapshot) == (task_id, None)  # the worker reads instead


def test_settled_messages_are_deleted_ten_to_a_request(queue, raw):
    for i in range(12):  # a group each: FIFO withholds a group's second message while in flight
        queue.send(uuid.uuid4().hex, "demo.noop", group_id=f"batch#{i}")
    handles: dict[str, str] = {}  # message id -> its receipt handle

    def all_received() -> bool:
        handles.update((m["MessageId"], m["ReceiptHandle"]) for m in queue.receive(10, 1, 30))
        return len(handles) == 12

    wait_for(all_received, 20, "all 12 messages received")
    batches = metric(
        "conveyor_aws_requests_total",
        service="sqs",
        operation="DeleteMessageBatch",
        outcome="success",
    )
    deleter = DeleteBatcher(queue, linger=5.0)  # only a full batch or close() sends before 5 s
    for handle in handles.values():
        deleter.add(handle)
    wait_for(lambda: raw.depth(raw.res.queue_url) == (0, 2), 10, "one full batch deleted")
    deleter.close()  # the rest, at once
    assert raw.depth(raw.res.queue_url) == (0, 0)
    used = metric(
        "conveyor_aws_requests_total",
        service="sqs",
        operation="DeleteMessageBatch",
        outcome="success",
    )
    assert used - batches == 2


def test_a_flush_sends_the_deletes_without_waiting_for_the_linger(queue, raw):
    queue.send(uuid.uuid4().hex, "demo.noop", tenant="t")
    [message] = wait_for(lambda: queue.receive(10, 1, 30), 10, "the message")
    deleter = DeleteBatcher(queue, linger=30.0)
    started = time.monotonic()
    deleter.add(message["ReceiptHandle"], flush=True)  # nothing else is about to settle
    wait_for(lambda: raw.depth(raw.res.queue_url) == (0, 0), 10, "the delete", every=0.05)
    assert time.monotonic() - started < 10  # not the 30 s linger
    deleter.close()
