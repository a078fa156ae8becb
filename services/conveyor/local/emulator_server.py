"""`python -m conveyor.local.emulator_server`: moto's server with a cheaper transaction snapshot.

moto 5.2 deep-copies the whole table once per item of every TransactWriteItems call, to roll
back if a condition fails. Conveyor writes every state change as a transaction, so a local run
slowed down linearly with the table (measured: 26 ms per submit at 300 items, 115 ms at 1200).
This launcher makes that snapshot copy only what the transaction can change: the item index
(so Puts and Deletes roll back) and, values included, the items under the partition keys the
transaction names (so Updates roll back, in-place nested ones too). Every other behaviour of
moto is untouched.
"""

from __future__ import annotations

import copy
import threading
import types
from collections import defaultdict
from typing import Any

import moto.dynamodb.models as ddb_models
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.server import main as moto_main

_call = threading.local()


def _snapshot_item(item: Any) -> Any:
    clone = object.__new__(type(item))  # not copy.copy: moto's BaseModel.__new__ is costly
    clone.__dict__.update(item.__dict__)
    attrs_type: Any = type(item.attrs)
    attrs = attrs_type.__new__(attrs_type)
    # Values deep-copied: moto applies nested SET, list-element SET, ADD and DELETE to the
    # attribute's value in place. Not key by key: moto re-sizes the item on every set.
    dict.update(attrs, {name: copy.deepcopy(value) for name, value in item.attrs.items()})
    clone.attrs = attrs
    return clone


def snapshot_table(table: Table, touched: set[DynamoType]) -> Table:
    """A copy of `table` that restores it after a transaction that only wrote items under the
    partition keys in `touched`: the index is copied, and so are the touched items."""
    clone = copy.copy(table)
    items: defaultdict[Any, Any] = defaultdict(dict)
    for hash_key, value in table.items.items():
        if hash_key not in touched:
            items[hash_key] = dict(value) if table.has_range_key else value
        elif table.has_range_key:
            items[hash_key] = {rk: _snapshot_item(i) for rk, i in value.items()}
        else:
            items[hash_key] = _snapshot_item(value)
    clone.items = items
    return clone


def _touched_keys(backend: Any, transact_items: list[dict[str, Any]]) -> dict[str, set[Any]]:
    touched: dict[str, set[Any]] = defaultdict(set)
    for entry in transact_items:
        op = next(iter(entry.values()))
        table = backend.tables.get(op.get("TableName"))
        if table is None:
            continue
        source = op.get("Key") or op.get("Item") or {}
        if table.hash_key_attr in source:
            touched[table.name].add(DynamoType(source[table.hash_key_attr]))
    return touched


def _deepcopy(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    touched = getattr(_call, "touched", None)
    if isinstance(obj, Table) and touched is not None:
        snapshots = _call.snapshots
        if obj.name not in snapshots:  # moto asks once per transaction item
            snapshots[obj.name] = snapshot_table(obj, touched.get(obj.name, set()))
        return snapshots[obj.name]
    return copy.deepcopy(obj, memo)


def install() -> None:
    original = ddb_models.DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        _call.touched = _touched_keys(self, transact_items)
        _call.snapshots = {}
        try:
            original(self, transact_items)
        finally:
            _call.touched = None

    shim = types.ModuleType("copy")
    shim.__dict__.update(copy.__dict__)
    shim.deepcopy = _deepcopy  # type: ignore[attr-defined]
    ddb_models.copy = shim
    setattr(ddb_models.DynamoDBBackend, "transact_write_items", transact_write_items)  # noqa: B010


if __name__ == "__main__":
    install()
    moto_main()
