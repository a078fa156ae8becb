"""FIFO message groups (conveyor.queue.TaskQueue.group_id): `<type>#<shard>`, stable per task and
spread over CONVEYOR_MESSAGE_GROUP_SHARDS so one poison task cannot hold back its whole type."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from conveyor.aws import AwsClients
from conveyor.queue import TaskQueue
from conveyor.settings import AwsSettings, QueueSettings
from hypothesis import given
from hypothesis import strategies as st

TASK_IDS = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)


def _queue(shards: int) -> TaskQueue:
    clients = AwsClients(AwsSettings(AWS_REGION="us-east-1"))  # type: ignore[call-arg]
    settings = QueueSettings(
        queue_url="http://sqs/q.fifo", dlq_url="http://sqs/dlq.fifo", message_group_shards=shards
    )
    return TaskQueue(clients, settings)


EIGHT = _queue(8)


@pytest.fixture
def eight() -> TaskQueue:
    return EIGHT


@given(TASK_IDS, st.sampled_from(["demo.sleep", "a", "x.y-z_1"]))
def test_group_is_type_and_shard_in_range(task_id: str, task_type: str):
    group = EIGHT.group_id(task_id, task_type)
    prefix, _, shard = group.rpartition("#")
    assert prefix == task_type
    assert 0 <= int(shard) < 8
    assert len(group) <= 128  # SQS's MessageGroupId limit


def test_group_is_stable_per_task_across_calls_and_instances(eight: TaskQueue):
    ids = [uuid.uuid4().hex for _ in range(200)]
    first = [eight.group_id(i, "demo.sleep") for i in ids]
    assert [eight.group_id(i, "demo.sleep") for i in ids] == first
    other = _queue(8)
    assert [other.group_id(i, "demo.sleep") for i in ids] == first


def test_one_type_spreads_evenly_over_every_shard(eight: TaskQueue):
    groups = Counter(eight.group_id(uuid.uuid4().hex, "demo.sleep") for _ in range(4000))
    assert set(groups) == {f"demo.sleep#{n}" for n in range(8)}
    # 500 expected per shard; +-30 % is more than 13 standard deviations.
    assert all(350 <= count <= 650 for count in groups.values()), groups


def test_types_never_share_a_group(eight: TaskQueue):
    task_id = uuid.uuid4().hex
    assert eight.group_id(task_id, "a") != eight.group_id(task_id, "b")


@pytest.mark.parametrize("shards", [1, 3, 1024])
def test_shard_count_is_honoured(shards: int):
    queue = _queue(shards)
    seen = {queue.group_id(uuid.uuid4().hex, "t").split("#")[1] for _ in range(3000)}
    assert all(0 <= int(s) < shards for s in seen)
    if shards == 1:
        assert seen == {"0"}
    elif shards == 3:
        assert seen == {"0", "1", "2"}
    else:
        assert len(seen) > 900  # most of the 1024 groups are used
