"""The IAM action log: with `CONVEYOR_AWS_ACTION_LOG` set to a file path, every AWS client of
the process appends each distinct AWS action it performs (IAM action, the resource it
addressed) as one JSON line, so that tests/infra/test_iam_exercised.py can prove the stacks'
IAM grants against what the services really call. Installed by conveyor_dev.inject.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from typing import Any

from botocore.client import BaseClient

ACTION_LOG_VARIABLE = "CONVEYOR_AWS_ACTION_LOG"
# DynamoDB authorises a transaction per item, as the item's own action.
_TRANSACT_ITEM_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}


def _addressed(service: str, operation: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """(IAM action, resource) pairs a call is authorised as; the resource is the ARN's part
    after the account (a queue name, `table/<name>[/index/<name>]`), or `*`."""
    if service == "dynamodb" and operation in ("TransactWriteItems", "TransactGetItems"):
        return [
            (f"dynamodb:{_TRANSACT_ITEM_ACTIONS[kind]}", f"table/{body['TableName']}")
            for item in params.get("TransactItems", [])
            for kind, body in item.items()
        ]
    if service == "dynamodb" and operation in ("BatchGetItem", "BatchWriteItem"):
        return [(f"dynamodb:{operation}", f"table/{table}") for table in params["RequestItems"]]
    if service == "dynamodb" and "TableName" in params:
        index = f"/index/{params['IndexName']}" if params.get("IndexName") else ""
        return [(f"dynamodb:{operation}", f"table/{params['TableName']}{index}")]
    if service == "sqs" and "QueueUrl" in params:
        # SQS authorises a batch action as its one-message action (DeleteMessageBatch needs
        # sqs:DeleteMessage): the API permissions reference lists no action of its own for it.
        action = operation.removesuffix("Batch")
        return [(f"sqs:{action}", str(params["QueueUrl"]).rstrip("/").rsplit("/", 1)[-1])]
    return [(f"{service}:{operation}", "*")]


class ActionLog:
    """Appends (process, action, resource) once per distinct pair, one JSON line per write()
    on an O_APPEND descriptor, so several processes can share the file."""

    def __init__(self, path: str, process: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._process = process
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def on_call(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.signing_name or model.service_model.endpoint_prefix
        for action, resource in _addressed(service, model.name, params):
            with self._lock:
                if (action, resource) in self._seen:
                    continue
                self._seen.add((action, resource))
                line = {"process": self._process, "action": action, "resource": resource}
                os.write(self._fd, (json.dumps(line) + "\n").encode())


def hook_from_env() -> Callable[[BaseClient], None] | None:
    """A client hook that logs the client's actions to the file the environment names, or
    None when it names none. Spawned services get CONVEYOR_SERVICE_NAME (the process label)."""
    path = os.environ.get(ACTION_LOG_VARIABLE)
    if not path:
        return None
    log = ActionLog(path, os.environ.get("CONVEYOR_SERVICE_NAME", "conveyor"))

    def install(client: BaseClient) -> None:
        client.meta.events.register("before-parameter-build", log.on_call)

    return install
