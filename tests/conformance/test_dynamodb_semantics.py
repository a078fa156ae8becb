"""DynamoDB, one request at a time: the conditions, transactions, indexes and limits Conveyor's
store relies on. Each case says what AWS does and where AWS documents it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aws_support import error_code, n, new_table, s

CONDITION_DOC = "DynamoDB Developer Guide, 'Condition expressions'"


def _cancel_codes(exc: BaseException) -> list[str]:
    reasons = getattr(exc, "response", {}).get("CancellationReasons", [])
    return [str(r.get("Code")) for r in reasons]


@pytest.fixture
def table(dynamodb: Any) -> str:
    return new_table(dynamodb)


def test_conditional_put_update_and_delete_fail_without_effect(dynamodb, table):
    """AWS: a Put, Update or Delete whose ConditionExpression is false fails with
    ConditionalCheckFailedException and leaves the item as it was.
    Doc: DynamoDB Developer Guide, "Condition expressions" (PutItem, UpdateItem, DeleteItem)."""
    key = {"pk": s("k")}
    dynamodb.put_item(TableName=table, Item={**key, "v": n(1)})
    attempts = [
        lambda: dynamodb.put_item(
            TableName=table, Item={**key, "v": n(2)}, ConditionExpression="attribute_not_exists(pk)"
        ),
        lambda: dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET v = :two",
            ConditionExpression="v = :zero",
            ExpressionAttributeValues={":two": n(2), ":zero": n(0)},
        ),
        lambda: dynamodb.delete_item(
            TableName=table,
            Key=key,
            ConditionExpression="v = :zero",
            ExpressionAttributeValues={":zero": n(0)},
        ),
    ]
    for attempt in attempts:
        with pytest.raises(Exception) as caught:
            attempt()
        assert error_code(caught.value) == "ConditionalCheckFailedException"
    item = dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
    assert item["v"] == n(1)


def test_a_delete_with_return_values_all_old_says_whether_the_item_was_there(dynamodb, table):
    """AWS: DeleteItem with ReturnValues=ALL_OLD returns the deleted item as Attributes, and no
    Attributes when there was no item (deleting a missing item is no error). DeleteSchedule
    answers `deleted` from it.
    Doc: DynamoDB API Reference, DeleteItem, "ReturnValues" and "Attributes"."""
    key = {"pk": s("gone")}
    dynamodb.put_item(TableName=table, Item={**key, "v": n(1)})
    first = dynamodb.delete_item(TableName=table, Key=key, ReturnValues="ALL_OLD")
    again = dynamodb.delete_item(TableName=table, Key=key, ReturnValues="ALL_OLD")
    assert first["Attributes"] == {**key, "v": n(1)}
    assert "Attributes" not in again


def test_return_values_on_condition_check_failure_returns_the_item(dynamodb, table):
    """AWS: with ReturnValuesOnConditionCheckFailure=ALL_OLD a failed conditional write returns
    the item as it is, in the error, so the caller needs no extra read.
    Doc: DynamoDB API Reference, PutItem, "ReturnValuesOnConditionCheckFailure"."""
    dynamodb.put_item(TableName=table, Item={"pk": s("k"), "v": n(7)})
    with pytest.raises(Exception) as caught:
        dynamodb.put_item(
            TableName=table,
            Item={"pk": s("k"), "v": n(8)},
            ConditionExpression="attribute_not_exists(pk)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert error_code(caught.value) == "ConditionalCheckFailedException"
    assert caught.value.response.get("Item") == {"pk": s("k"), "v": n(7)}  # type: ignore[attr-defined]


def test_an_update_appends_to_a_list_and_a_failed_one_returns_the_item(dynamodb, table):
    """AWS: `SET h = list_append(if_not_exists(h, :none), :e)` creates the list or appends to
    it; an UpdateItem whose condition fails, with ReturnValuesOnConditionCheckFailure=ALL_OLD,
    returns the item as it is. (The store appends a task's events this way, and tells its own
    retried write from another's by the item returned.)
    Doc: DynamoDB Developer Guide, "Update expressions" (list_append, if_not_exists); API
    Reference, UpdateItem, "ReturnValuesOnConditionCheckFailure"."""
    key = {"pk": s("task")}
    dynamodb.put_item(TableName=table, Item={**key, "v": n(1)})
    for version, event in ((1, "a"), (2, "b")):
        dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET v = :next, h = list_append(if_not_exists(h, :none), :e)",
            ConditionExpression="v = :v",
            ExpressionAttributeValues={
                ":next": n(version + 1),
                ":none": {"L": []},
                ":e": {"L": [s(event)]},
                ":v": n(version),
            },
        )
    with pytest.raises(Exception) as caught:
        dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET v = :next",
            ConditionExpression="v = :v",
            ExpressionAttributeValues={":next": n(2), ":v": n(1)},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert error_code(caught.value) == "ConditionalCheckFailedException"
    expected = {**key, "v": n(3), "h": {"L": [s("a"), s("b")]}}
    assert caught.value.response.get("Item") == expected  # type: ignore[attr-defined]


def test_a_consistent_batch_get_returns_only_the_projected_attributes(dynamodb, table):
    """AWS: BatchGetItem with ConsistentRead and a ProjectionExpression returns, for each key
    that exists, only the named attributes; a missing key is simply absent. (A listing reads a
    page's task items this way.)
    Doc: DynamoDB API Reference, BatchGetItem, "ConsistentRead", "ProjectionExpression"."""
    for k in ("a", "b"):
        dynamodb.put_item(TableName=table, Item={"pk": s(k), "state": s("X"), "big": s("x" * 500)})
    got = dynamodb.batch_get_item(
        RequestItems={
            table: {
                "Keys": [{"pk": s(k)} for k in ("a", "b", "missing")],
                "ConsistentRead": True,
                "ProjectionExpression": "#p, #s",
                "ExpressionAttributeNames": {"#p": "pk", "#s": "state"},
            }
        }
    )
    items = sorted(got["Responses"][table], key=lambda i: i["pk"]["S"])
    assert items == [{"pk": s("a"), "state": s("X")}, {"pk": s("b"), "state": s("X")}]
    assert not got.get("UnprocessedKeys", {}).get(table)


def test_a_cancelled_transaction_applies_nothing_and_reports_a_reason_per_item(dynamodb, table):
    """AWS: TransactWriteItems is all or nothing. When a condition fails the call raises
    TransactionCanceledException whose CancellationReasons has one entry per item, in order:
    "None" for the items that did not fail, "ConditionalCheckFailed" (with the item when
    ReturnValuesOnConditionCheckFailure=ALL_OLD) for the one that did.
    Doc: DynamoDB API Reference, TransactWriteItems, "Errors: TransactionCanceledException"."""
    dynamodb.put_item(TableName=table, Item={"pk": s("guard"), "v": n(1)})
    with pytest.raises(Exception) as caught:
        dynamodb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": {"pk": s("new-1")}}},
                {
                    "Update": {
                        "TableName": table,
                        "Key": {"pk": s("guard")},
                        "UpdateExpression": "SET v = :two",
                        "ConditionExpression": "v = :zero",
                        "ExpressionAttributeValues": {":two": n(2), ":zero": n(0)},
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
                {"Put": {"TableName": table, "Item": {"pk": s("new-2")}}},
            ]
        )
    assert error_code(caught.value) == "TransactionCanceledException"
    assert _cancel_codes(caught.value) == ["None", "ConditionalCheckFailed", "None"]
    reasons = caught.value.response["CancellationReasons"]  # type: ignore[attr-defined]
    assert reasons[1].get("Item") == {"pk": s("guard"), "v": n(1)}
    for key in ("new-1", "new-2"):
        assert "Item" not in dynamodb.get_item(TableName=table, Key={"pk": s(key)})
    guard = dynamodb.get_item(TableName=table, Key={"pk": s("guard")}, ConsistentRead=True)
    assert guard["Item"]["v"] == n(1)


def _increment(table: str) -> list[dict[str, Any]]:
    return [
        {
            "Update": {
                "TableName": table,
                "Key": {"pk": s("counter")},
                "UpdateExpression": "ADD v :one",
                "ExpressionAttributeValues": {":one": n(1)},
            }
        }
    ]


def test_a_transaction_replayed_with_its_client_request_token_succeeds_once(dynamodb, table):
    """AWS: TransactWriteItems with the same ClientRequestToken within 10 minutes is idempotent:
    the repeat succeeds without applying the writes again.
    Doc: DynamoDB API Reference, TransactWriteItems, "ClientRequestToken"."""
    token = uuid.uuid4().hex
    for _ in range(2):
        dynamodb.transact_write_items(TransactItems=_increment(table), ClientRequestToken=token)
    item = dynamodb.get_item(TableName=table, Key={"pk": s("counter")}, ConsistentRead=True)
    assert item["Item"]["v"] == n(1)


def test_a_client_request_token_reused_for_another_request_is_refused(dynamodb, table):
    """AWS: the same ClientRequestToken with different parameters fails with
    IdempotentParameterMismatchException.
    Doc: DynamoDB API Reference, TransactWriteItems, "ClientRequestToken" and "Errors"."""
    token = uuid.uuid4().hex
    dynamodb.transact_write_items(TransactItems=_increment(table), ClientRequestToken=token)
    other = [{"Put": {"TableName": table, "Item": {"pk": s("other")}}}]
    with pytest.raises(Exception) as caught:
        dynamodb.transact_write_items(TransactItems=other, ClientRequestToken=token)
    assert error_code(caught.value) == "IdempotentParameterMismatchException"


def test_unused_expression_attribute_values_are_rejected(dynamodb, table):
    """AWS: an ExpressionAttributeValues entry that no expression uses is a ValidationException,
    and nothing is written.
    Doc: DynamoDB Developer Guide, "Using expression attribute values" (every value must be
    used)."""
    with pytest.raises(Exception) as caught:
        dynamodb.put_item(
            TableName=table,
            Item={"pk": s("k")},
            ConditionExpression="attribute_not_exists(pk)",
            ExpressionAttributeValues={":unused": n(1)},
        )
    assert error_code(caught.value) == "ValidationException"
    assert "Item" not in dynamodb.get_item(TableName=table, Key={"pk": s("k")})


@pytest.mark.parametrize("name", ["ab", "x" * 256])
def test_table_names_outside_3_to_255_characters_are_rejected(dynamodb, name):
    """AWS: a table name must be 3 to 255 characters long.
    Doc: DynamoDB Developer Guide, "Supported data types and naming rules", "Naming rules"."""
    with pytest.raises(Exception) as caught:
        dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    assert error_code(caught.value) == "ValidationException"


def test_items_over_400_kb_are_rejected(dynamodb, table):
    """AWS: the maximum item size is 400 KB (names and values); a bigger Put is a
    ValidationException and nothing is stored.
    Doc: DynamoDB Developer Guide, "Quotas in Amazon DynamoDB", "Item size"."""
    dynamodb.put_item(TableName=table, Item={"pk": s("fits"), "blob": s("x" * 390_000)})
    with pytest.raises(Exception) as caught:
        dynamodb.put_item(TableName=table, Item={"pk": s("big"), "blob": s("x" * 410_000)})
    assert error_code(caught.value) == "ValidationException"
    assert "Item" not in dynamodb.get_item(TableName=table, Key={"pk": s("big")})


GSI = {
    "IndexName": "by-state",
    "KeySchema": [
        {"AttributeName": "state", "KeyType": "HASH"},
        {"AttributeName": "at", "KeyType": "RANGE"},
    ],
    "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["kept"]},
}


@pytest.fixture
def indexed(dynamodb: Any) -> str:
    return new_table(
        dynamodb,
        extra_attributes=[
            {"AttributeName": "state", "AttributeType": "S"},
            {"AttributeName": "at", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[GSI],
    )


def test_a_sparse_gsi_holds_only_items_with_its_keys_and_projects_only_included(dynamodb, indexed):
    """AWS: an item without the index's key attributes is not in a GSI (a sparse index), and an
    INCLUDE projection returns the table and index keys plus the listed attributes only.
    Doc: DynamoDB Developer Guide, "Take advantage of sparse indexes" and "Projections"
    (Global secondary indexes)."""
    dynamodb.put_item(
        TableName=indexed,
        Item={
            "pk": s("in"),
            "state": s("RUNNING"),
            "at": s("1"),
            "kept": s("k"),
            "dropped": s("d"),
        },
    )
    dynamodb.put_item(TableName=indexed, Item={"pk": s("out"), "kept": s("k")})
    items = dynamodb.query(
        TableName=indexed,
        IndexName="by-state",
        KeyConditionExpression="#s = :s",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":s": s("RUNNING")},
    )["Items"]
    assert items == [{"pk": s("in"), "state": s("RUNNING"), "at": s("1"), "kept": s("k")}]
    scanned = dynamodb.scan(TableName=indexed, IndexName="by-state")["Items"]
    assert [i["pk"] for i in scanned] == [s("in")]


def test_a_gsi_key_of_the_wrong_type_is_rejected(dynamodb, indexed):
    """AWS: a write whose GSI key attribute has another type than the index declares is a
    ValidationException.
    Doc: DynamoDB Developer Guide, "Global secondary indexes", "Attribute projections" / "Data
    synchronization": index key attributes must match the declared scalar type."""
    with pytest.raises(Exception) as caught:
        dynamodb.put_item(TableName=indexed, Item={"pk": s("k"), "state": n(1), "at": s("1")})
    assert error_code(caught.value) == "ValidationException"


def test_query_pages_in_sort_key_order_both_ways(dynamodb):
    """AWS: Query returns a partition's items in sort-key order (reversed with
    ScanIndexForward=false); with Limit it returns LastEvaluatedKey until the last page, and
    ExclusiveStartKey resumes after it, so the pages cover every item once.
    Doc: DynamoDB Developer Guide, "Paginating table query results" and "Query" (sort order)."""
    table = new_table(dynamodb, range_key=True)
    keys = [f"{i:03d}" for i in range(25)]
    for sk in reversed(keys):
        dynamodb.put_item(TableName=table, Item={"pk": s("p"), "sk": s(sk)})
    for forward in (True, False):
        seen: list[str] = []
        start: dict[str, Any] | None = None
        while True:
            page = dynamodb.query(
                TableName=table,
                KeyConditionExpression="pk = :p",
                ExpressionAttributeValues={":p": s("p")},
                Limit=7,
                ScanIndexForward=forward,
                ConsistentRead=True,
                **({"ExclusiveStartKey": start} if start else {}),
            )
            seen += [i["sk"]["S"] for i in page["Items"]]
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        assert seen == (keys if forward else keys[::-1])


def test_a_sparse_gsi_queries_a_partition_by_a_numeric_sort_key_earliest_first(dynamodb):
    """AWS: a Query of a GSI partition returns its items in numeric sort-key order (100 before
    20, unlike strings), Limit keeps the earliest, a `<` key condition bounds them, and an item
    leaves the index when an update removes its key attributes. The relay relies on all four:
    due marks earliest first, and the next one to come after those due.
    Doc: DynamoDB Developer Guide, "Query" (key condition expressions, sort order) and "Take
    advantage of sparse indexes"."""
    table = new_table(
        dynamodb,
        extra_attributes=[
            {"AttributeName": "due_pk", "AttributeType": "S"},
            {"AttributeName": "due_at", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "due",
                "KeySchema": [
                    {"AttributeName": "due_pk", "KeyType": "HASH"},
                    {"AttributeName": "due_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    )
    for key, at in (("c", 100), ("a", 20), ("b", 3), ("x", 1)):
        part = "DUE#0" if key != "x" else "DUE#1"
        dynamodb.put_item(TableName=table, Item={"pk": s(key), "due_pk": s(part), "due_at": n(at)})

    def query(limit: int, before: int | None = None) -> list[str]:
        condition, values = "due_pk = :p", {":p": s("DUE#0")}
        if before is not None:
            condition += " AND due_at < :before"
            values[":before"] = n(before)
        items = dynamodb.query(
            TableName=table,
            IndexName="due",
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            Limit=limit,
        )["Items"]
        return [i["pk"]["S"] for i in items]

    assert query(10) == ["b", "a", "c"]
    assert query(2) == ["b", "a"]
    assert query(10, before=100) == ["b", "a"]
    dynamodb.update_item(
        TableName=table,
        Key={"pk": s("b")},
        UpdateExpression="REMOVE due_pk, due_at",
    )
    assert query(10) == ["a", "c"]
