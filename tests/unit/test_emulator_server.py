"""The emulator launcher's cheap transaction snapshot (conveyor.local.emulator_server) must still
roll a cancelled TransactWriteItems back completely, against the session's moto server.

Each test makes its own small tables, so nothing depends on what other tests wrote.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conveyor.local.backend import Backend


@pytest.fixture(scope="module")
def ddb(aws_backend: Backend) -> Any:
    if aws_backend.kind != "moto":
        pytest.skip(f"the snapshot shim runs in the embedded moto server, not {aws_backend.kind}")
    return aws_backend.client("dynamodb")


def _create(ddb: Any, range_key: bool) -> str:
    name = f"snapshot-{uuid.uuid4().hex[:12]}"
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attrs = [{"AttributeName": "pk", "AttributeType": "S"}]
    if range_key:
        keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attrs.append({"AttributeName": "sk", "AttributeType": "S"})
    ddb.create_table(
        TableName=name, KeySchema=keys, AttributeDefinitions=attrs, BillingMode="PAY_PER_REQUEST"
    )
    return name


@pytest.fixture(params=[True, False], ids=["pk+sk", "pk-only"])
def table(request: pytest.FixtureRequest, ddb: Any) -> Iterator[tuple[str, bool]]:
    name = _create(ddb, request.param)
    yield name, request.param
    ddb.delete_table(TableName=name)


def _key(pk: str, has_range: bool, sk: str = "A") -> dict[str, Any]:
    return {"pk": {"S": pk}, **({"sk": {"S": sk}} if has_range else {})}


def _all(ddb: Any, name: str) -> list[dict[str, Any]]:
    items = ddb.scan(TableName=name, ConsistentRead=True)["Items"]
    return sorted(items, key=lambda i: (i["pk"]["S"], i.get("sk", {}).get("S", "")))


def _fail() -> dict[str, Any]:
    return {"ConditionExpression": "attribute_exists(pk)"}


def _cancelled(ddb: Any, items: list[dict[str, Any]]) -> list[str]:
    with pytest.raises(ClientError) as caught:
        ddb.transact_write_items(TransactItems=items)
    assert caught.value.response["Error"]["Code"] == "TransactionCanceledException", caught.value
    return [r["Code"] for r in caught.value.response["CancellationReasons"]]


def test_failed_transaction_rolls_back_an_update_and_a_put(ddb, table):
    name, has_range = table
    existing = {**_key("one", has_range), "v": {"N": "1"}, "tag": {"S": "keep"}}
    bystander = {**_key("other", has_range), "v": {"N": "7"}}
    ddb.put_item(TableName=name, Item=existing)
    ddb.put_item(TableName=name, Item=bystander)
    before = _all(ddb, name)

    reasons = _cancelled(
        ddb,
        [
            {
                "Update": {
                    "TableName": name,
                    "Key": _key("one", has_range),
                    "UpdateExpression": "SET v = :two REMOVE tag",
                    "ExpressionAttributeValues": {":two": {"N": "2"}},
                }
            },
            {"Put": {"TableName": name, "Item": {**_key("two", has_range), "v": {"N": "1"}}}},
            {"Put": {"TableName": name, "Item": _key("three", has_range), **_fail()}},
        ],
    )

    assert reasons == ["None", "None", "ConditionalCheckFailed"]
    assert _all(ddb, name) == before
    item = ddb.get_item(TableName=name, Key=_key("one", has_range), ConsistentRead=True)["Item"]
    assert item == existing
    assert "Item" not in ddb.get_item(TableName=name, Key=_key("two", has_range))


def test_successful_transaction_applies_everything(ddb, table):
    name, has_range = table
    ddb.put_item(TableName=name, Item={**_key("one", has_range), "v": {"N": "1"}})
    ddb.put_item(TableName=name, Item={**_key("gone", has_range)})
    ddb.transact_write_items(
        TransactItems=[
            {
                "Update": {
                    "TableName": name,
                    "Key": _key("one", has_range),
                    "UpdateExpression": "SET v = :two",
                    "ConditionExpression": "v = :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}, ":two": {"N": "2"}},
                }
            },
            {"Put": {"TableName": name, "Item": {**_key("two", has_range), "v": {"N": "5"}}}},
            {"Delete": {"TableName": name, "Key": _key("gone", has_range)}},
        ]
    )
    assert _all(ddb, name) == [
        {**_key("one", has_range), "v": {"N": "2"}},
        {**_key("two", has_range), "v": {"N": "5"}},
    ]


def test_failed_transaction_rolls_back_a_delete_and_an_overwrite(ddb, table):
    name, has_range = table
    ddb.put_item(TableName=name, Item={**_key("a", has_range), "v": {"S": "old"}})
    ddb.put_item(TableName=name, Item={**_key("b", has_range), "v": {"S": "old"}})
    before = _all(ddb, name)
    _cancelled(
        ddb,
        [
            {"Delete": {"TableName": name, "Key": _key("a", has_range)}},
            {"Put": {"TableName": name, "Item": {**_key("b", has_range), "v": {"S": "new"}}}},
            {"ConditionCheck": {"TableName": name, "Key": _key("nope", has_range), **_fail()}},
        ],
    )
    assert _all(ddb, name) == before


def test_rollback_keeps_sibling_items_of_a_touched_partition(ddb):
    """Task and event items share a partition: a rollback must restore both."""
    name = _create(ddb, range_key=True)
    try:
        ddb.put_item(TableName=name, Item={**_key("task", True, "TASK"), "state": {"S": "QUEUED"}})
        ddb.put_item(TableName=name, Item={**_key("task", True, "EVENT#1")})
        before = _all(ddb, name)
        _cancelled(
            ddb,
            [
                {
                    "Update": {
                        "TableName": name,
                        "Key": _key("task", True, "TASK"),
                        "UpdateExpression": "SET #s = :r",
                        "ExpressionAttributeNames": {"#s": "state"},
                        "ExpressionAttributeValues": {":r": {"S": "RUNNING"}},
                    }
                },
                {"Put": {"TableName": name, "Item": _key("task", True, "EVENT#2")}},
                {"Put": {"TableName": name, "Item": _key("other", True), **_fail()}},
            ],
        )
        assert _all(ddb, name) == before
    finally:
        ddb.delete_table(TableName=name)


@pytest.mark.parametrize(
    ("update", "values"),
    [
        ("SET m.field1 = :v", {":v": {"S": "changed"}}),
        ("ADD tags :v", {":v": {"SS": ["new"]}}),
        ("DELETE tags :v", {":v": {"SS": ["t1"]}}),
        ("SET l[0] = :v", {":v": {"S": "changed"}}),
    ],
    ids=["nested-set", "add-to-set", "delete-from-set", "list-element"],
)
def test_rollback_undoes_in_place_changes_to_nested_values(ddb, update, values):
    """moto applies nested SET, ADD and DELETE to the attribute's value in place."""
    name = _create(ddb, range_key=True)
    try:
        item = {
            **_key("one", True),
            "m": {"M": {"field1": {"S": "orig"}}},
            "tags": {"SS": ["t1", "t2"]},
            "l": {"L": [{"S": "orig"}]},
        }
        ddb.put_item(TableName=name, Item=item)
        before = _all(ddb, name)
        _cancelled(
            ddb,
            [
                {
                    "Update": {
                        "TableName": name,
                        "Key": _key("one", True),
                        "UpdateExpression": update,
                        "ExpressionAttributeValues": values,
                    }
                },
                {"Put": {"TableName": name, "Item": _key("x", True), **_fail()}},
            ],
        )
        assert _all(ddb, name) == before
    finally:
        ddb.delete_table(TableName=name)


def test_rollback_across_two_tables(ddb):
    first, second = _create(ddb, range_key=True), _create(ddb, range_key=False)
    try:
        ddb.put_item(TableName=first, Item={**_key("a", True), "v": {"N": "1"}})
        before = (_all(ddb, first), _all(ddb, second))
        _cancelled(
            ddb,
            [
                {
                    "Update": {
                        "TableName": first,
                        "Key": _key("a", True),
                        "UpdateExpression": "SET v = :v",
                        "ExpressionAttributeValues": {":v": {"N": "2"}},
                    }
                },
                {"Put": {"TableName": second, "Item": _key("b", False)}},
                {"Put": {"TableName": second, "Item": _key("c", False), **_fail()}},
            ],
        )
        assert (_all(ddb, first), _all(ddb, second)) == before
    finally:
        ddb.delete_table(TableName=first)
        ddb.delete_table(TableName=second)
