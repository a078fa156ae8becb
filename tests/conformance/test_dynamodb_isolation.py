"""DynamoDB under concurrency: what Conveyor's "nothing lost" results rest on.

Conveyor writes every state change as a conditional transaction, and conflicts between the API,
the relay and workers make cancelled transactions routine. These cases run that pattern from
several threads at once against one table.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aws_support import error_code, n, new_table, s, scan_all
from botocore.config import Config

COMMITTERS, FAILERS = 4, 2
COMMITS_PER_THREAD = 200
TORN_WRITES = 300
# Items per transaction in the torn-read case: more items, a wider window to see one half done.
TORN_ITEMS = 10
INCREMENTERS, INCREMENTS_PER_THREAD = 8, 50


@pytest.fixture
def pooled(dynamodb: Any) -> Any:
    """The same endpoint with a connection per thread and no retries (each answer counts)."""
    meta = dynamodb.meta
    import boto3

    return boto3.client(
        "dynamodb",
        endpoint_url=meta.endpoint_url,
        region_name=meta.region_name,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(max_pool_connections=16, retries={"total_max_attempts": 1}),
    )


def test_no_acknowledged_transaction_is_lost_while_others_are_cancelled(pooled):
    """AWS: a TransactWriteItems call that returned 200 is durable, and one cancelled by a
    failed condition changes nothing: no other request's committed items disappear.
    Doc: DynamoDB Developer Guide, "Amazon DynamoDB Transactions: How it works",
    "Isolation levels for DynamoDB transactions" (serializable between transactions)."""
    ddb = pooled
    table = new_table(ddb)
    ddb.put_item(TableName=table, Item={"pk": s("blocker")})
    acknowledged: list[str] = []
    lock = threading.Lock()
    done = threading.Event()

    def commit(thread: int) -> None:
        for i in range(COMMITS_PER_THREAD):
            key = f"c{thread}-{i}"
            try:
                ddb.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": table,
                                "Item": {"pk": s(f"{key}#{part}")},
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        }
                        for part in ("a", "b")
                    ]
                )
            except Exception:
                continue  # not acknowledged (an emulator's 500): not counted
            with lock:
                acknowledged.extend((f"{key}#a", f"{key}#b"))

    def fail() -> int:
        cancelled = 0
        while not done.is_set():
            try:
                ddb.transact_write_items(
                    TransactItems=[
                        {"Put": {"TableName": table, "Item": {"pk": s(f"f-{uuid.uuid4().hex}")}}},
                        {
                            "ConditionCheck": {
                                "TableName": table,
                                "Key": {"pk": s("blocker")},
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        },
                    ]
                )
            except Exception as exc:
                cancelled += error_code(exc) == "TransactionCanceledException"
        return cancelled

    with ThreadPoolExecutor(COMMITTERS + FAILERS) as pool:
        failers = [pool.submit(fail) for _ in range(FAILERS)]
        list(pool.map(commit, range(COMMITTERS)))
        done.set()
        cancelled = sum(f.result() for f in failers)
    present = {item["pk"]["S"] for item in scan_all(ddb, table)}
    lost = [key for key in acknowledged if key not in present]
    stray = [key for key in present if key.startswith("f-")]
    print(f"lost {len(lost)} items of {len(acknowledged) // 2} acknowledged transactions")
    assert cancelled > 0 and len(acknowledged) > COMMITTERS * COMMITS_PER_THREAD
    assert (len(lost), len(stray)) == (0, 0), (
        f"{len(lost)} items of {len(acknowledged) // 2} acknowledged transactions lost; "
        f"{len(stray)} items of {cancelled} cancelled transactions written"
    )


def test_a_transactional_reader_never_sees_a_transaction_half_applied(pooled):
    """AWS: TransactGetItems is serializable with TransactWriteItems: a reader sees all items
    of a (here 10-item) transaction written, or none.
    Doc: DynamoDB Developer Guide, "Amazon DynamoDB Transactions: How it works",
    "Isolation levels for DynamoDB transactions" (TransactWriteItems / TransactGetItems)."""
    ddb = pooled
    table = new_table(ddb)
    keys = [f"k{i}" for i in range(TORN_ITEMS)]
    for key in keys:
        ddb.put_item(TableName=table, Item={"pk": s(key), "v": n(0)})
    done = threading.Event()

    def write() -> None:
        for version in range(1, TORN_WRITES + 1):
            ddb.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": table,
                            "Key": {"pk": s(key)},
                            "UpdateExpression": "SET v = :v",
                            "ExpressionAttributeValues": {":v": n(version)},
                        }
                    }
                    for key in keys
                ]
            )
        done.set()

    def read() -> tuple[int, int]:
        reads = torn = 0
        while not done.is_set():
            try:
                got = ddb.transact_get_items(
                    TransactItems=[
                        {"Get": {"TableName": table, "Key": {"pk": s(key)}}} for key in keys
                    ]
                )["Responses"]
            except Exception as exc:
                if error_code(exc) == "TransactionCanceledException":
                    continue  # AWS may cancel a read that conflicts with a write: allowed
                raise
            reads += 1
            torn += len({item["Item"]["v"]["N"] for item in got}) > 1
        return reads, torn

    with ThreadPoolExecutor(3) as pool:
        readers = [pool.submit(read) for _ in range(2)]
        pool.submit(write).result()
        reads = sum(r.result()[0] for r in readers)
        torn = sum(r.result()[1] for r in readers)
    print(f"torn {torn} of {reads} transactional reads")
    assert reads > 0
    assert torn == 0, f"{torn} of {reads} transactional reads saw a transaction half applied"


def test_concurrent_conditional_increments_all_count(pooled):
    """AWS: a conditional write is atomic with its condition: of N read-then-conditionally-
    write increments that succeed, none is lost, so the counter ends at exactly N.
    Doc: DynamoDB Developer Guide, "Working with items and attributes", "Condition expressions"
    and "Optimistic locking with version number"."""
    ddb = pooled
    table = new_table(ddb)
    ddb.put_item(TableName=table, Item={"pk": s("counter"), "v": n(0)})

    def increment(_: int) -> int:
        succeeded = 0
        while succeeded < INCREMENTS_PER_THREAD:
            item = ddb.get_item(TableName=table, Key={"pk": s("counter")}, ConsistentRead=True)
            seen = int(item["Item"]["v"]["N"])
            try:
                ddb.update_item(
                    TableName=table,
                    Key={"pk": s("counter")},
                    UpdateExpression="SET v = :new",
                    ConditionExpression="v = :seen",
                    ExpressionAttributeValues={":new": n(seen + 1), ":seen": n(seen)},
                )
            except Exception as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                continue
            succeeded += 1
        return succeeded

    with ThreadPoolExecutor(INCREMENTERS) as pool:
        successes = sum(pool.map(increment, range(INCREMENTERS)))
    final = ddb.get_item(TableName=table, Key={"pk": s("counter")}, ConsistentRead=True)
    print(f"counter {final['Item']['v']['N']} after {successes} successful increments")
    assert successes == INCREMENTERS * INCREMENTS_PER_THREAD
    assert int(final["Item"]["v"]["N"]) == successes
