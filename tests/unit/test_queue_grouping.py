"""FIFO message groups (conveyor.queue.TaskQueue.group_id): `<tenant>#<type>#<shard>`, stable per
task, spread over CONVEYOR_MESSAGE_GROUP_SHARDS so one poison task cannot hold back its whole
type, and apart per tenant so one tenant's backlog never sits in another's groups."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from conveyor.aws import AwsClients
from conveyor.domain import TASK_TYPE_RE, TENANT_RE
from conveyor.queue import MAX_GROUP_ID_CHARS, TaskQueue
from conveyor.settings import AwsSettings, QueueSettings
from hypothesis import example, given
from hypothesis import strategies as st

TASK_IDS = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
TENANTS = st.from_regex(TENANT_RE, fullmatch=True)
TYPES = st.from_regex(TASK_TYPE_RE, fullmatch=True)


def _queue(shards: int) -> TaskQueue:
    clients = AwsClients(AwsSettings(AWS_REGION="us-east-1"))  # type: ignore[call-arg]
    settings = QueueSettings(
        queue_url="http://sqs/q.fifo",
        dlq_url="http://sqs/dlq.fifo",
        queue_url_high="http://sqs/q-high.fifo",
        dlq_url_high="http://sqs/dlq-high.fifo",
        message_group_shards=shards,
    )
    return TaskQueue(clients, settings)


EIGHT = _queue(8)


@pytest.fixture
def eight() -> TaskQueue:
    return EIGHT


@given(TASK_IDS, TYPES, TENANTS)
def test_group_is_tenant_type_and_shard_in_range(task_id: str, task_type: str, tenant: str):
    group = EIGHT.group_id(task_id, task_type, tenant)
    owner, kind, shard = group.split("#")
    assert kind == task_type
    assert 0 <= int(shard) < 8
    assert len(group) <= MAX_GROUP_ID_CHARS  # SQS's MessageGroupId limit
    assert owner == tenant or len(f"{tenant}#{task_type}#{shard}") > MAX_GROUP_ID_CHARS


LONG_TYPE = "t" * 64
LONG_TENANTS = ("a" * 62 + "1", "a" * 62 + "2")  # too long to fit beside LONG_TYPE


@given(TASK_IDS, TYPES, TENANTS, TENANTS)
@example(uuid.uuid4().hex, LONG_TYPE, *LONG_TENANTS)
def test_tenants_never_share_a_group(task_id: str, task_type: str, one: str, other: str):
    """Even tenants whose names are too long to fit and are digested."""
    if one != other:
        assert EIGHT.group_id(task_id, task_type, one) != EIGHT.group_id(task_id, task_type, other)


def test_group_is_stable_per_task_across_calls_and_instances(eight: TaskQueue):
    ids = [uuid.uuid4().hex for _ in range(200)]
    first = [eight.group_id(i, "demo.sleep", "acme") for i in ids]
    assert [eight.group_id(i, "demo.sleep", "acme") for i in ids] == first
    other = _queue(8)
    assert [other.group_id(i, "demo.sleep", "acme") for i in ids] == first


def test_one_type_spreads_evenly_over_every_shard(eight: TaskQueue):
    groups = Counter(eight.group_id(uuid.uuid4().hex, "demo.sleep", "acme") for _ in range(4000))
    assert set(groups) == {f"acme#demo.sleep#{n}" for n in range(8)}
    # 500 expected per shard; +-30 % is more than 13 standard deviations.
    assert all(350 <= count <= 650 for count in groups.values()), groups


def test_types_never_share_a_group(eight: TaskQueue):
    task_id = uuid.uuid4().hex
    assert eight.group_id(task_id, "a", "acme") != eight.group_id(task_id, "b", "acme")


@pytest.mark.parametrize("shards", [1, 3, 1024])
def test_shard_count_is_honoured(shards: int):
    queue = _queue(shards)
    seen = {queue.group_id(uuid.uuid4().hex, "t", "acme").split("#")[2] for _ in range(3000)}
    assert all(0 <= int(s) < shards for s in seen)
    if shards == 1:
        assert seen == {"0"}
    elif shards == 3:
        assert seen == {"0", "1", "2"}
    else:
        assert len(seen) > 900  # most of the 1024 groups are used
