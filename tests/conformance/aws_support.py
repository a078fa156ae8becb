"""Small helpers for the conformance cases: fresh resources, typed values."""

from __future__ import annotations

import uuid
from typing import Any

from support import wait_for


def s(value: str) -> dict[str, str]:
    return {"S": value}


def n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def error_code(exc: BaseException) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def new_table(ddb: Any, *, range_key: bool = False, **extra: Any) -> str:
    """A fresh on-demand table with a string `pk` (and `sk`), ACTIVE."""
    name = f"conf-{uuid.uuid4().hex[:12]}"
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attributes = [{"AttributeName": "pk", "AttributeType": "S"}]
    if range_key:
        keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attributes.append({"AttributeName": "sk", "AttributeType": "S"})
    attributes += extra.pop("extra_attributes", [])
    ddb.create_table(
        TableName=name,
        KeySchema=keys,
        AttributeDefinitions=attributes,
        BillingMode="PAY_PER_REQUEST",
        **extra,
    )
    wait_for(
        lambda: ddb.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE",
        30,
        f"table {name} to be ACTIVE",
    )
    return name


def scan_all(ddb: Any, table: str, **kwargs: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in ddb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True, **kwargs):
        items.extend(page["Items"])
    return items


def new_fifo_queue(sqs: Any, **attributes: str) -> str:
    """A fresh FIFO queue (no content-based deduplication unless asked); its URL."""
    name = f"conf-{uuid.uuid4().hex[:12]}.fifo"
    return str(
        sqs.create_queue(
            QueueName=name,
            Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false", **attributes},
        )["QueueUrl"]
    )
