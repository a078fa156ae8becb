"""Schedule items in the task table (conveyor.schema): pk=SCHEDULES#<tenant>, sk=<name>, so a
tenant's schedules are one Query. An active schedule is in the sparse outbox index under the
SCHEDULES partition, dated at its next slot, so the relay finds the due ones with one Query (a
paused one is not). Firing advances `next_slot` with a write conditional on the slot it read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from conveyor import schema
from conveyor.store import TaskStore
from conveyor.tasks.codec import plain, typed


@dataclass(frozen=True)
class Schedule:
    tenant: str
    name: str
    cron: str
    time_zone: str
    task_type: str
    payload: bytes
    max_attempts: int
    paused: bool
    next_slot: datetime  # UTC
    created_at: datetime

    def same_definition(self, other: Schedule) -> bool:
        fields = ("cron", "time_zone", "task_type", "payload", "max_attempts")
        return all(getattr(self, f) == getattr(other, f) for f in fields)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _from_item(raw: dict[str, Any]) -> Schedule:
    v = plain(raw)
    return Schedule(
        tenant=v["tenant"],
        name=v[schema.SK],
        cron=v["cron"],
        time_zone=v["time_zone"],
        task_type=v["task_type"],
        payload=bytes(v["payload"].value) if "payload" in v else b"",
        max_attempts=int(v["max_attempts"]),
        paused=bool(v["paused"]),
        next_slot=_at(int(v["next_slot_ms"])),
        created_at=_at(int(v["created_ms"])),
    )


class ScheduleStore:
    """Schedules, through the task store's guarded calls (breaker, deadlines, metering)."""

    def __init__(self, store: TaskStore) -> None:
        self._store = store
        self.table = store.table

    def _key(self, tenant: str, name: str) -> dict[str, Any]:
        return typed({schema.PK: schema.schedules_pk(tenant), schema.SK: name})

    @staticmethod
    def _index(next_slot: datetime) -> dict[str, Any]:
        return {schema.GSI_OUTBOX_PK: schema.SCHEDULES_DUE_PK, schema.GSI_OUTBOX_SK: _ms(next_slot)}

    def create(self, s: Schedule, remaining: float | None = None) -> Schedule | None:
        """Stores `s` unless its name is taken: None if stored, else the schedule there."""
        values: dict[str, Any] = {
            schema.PK: schema.schedules_pk(s.tenant),
            schema.SK: s.name,
            "tenant": s.tenant,
            "cron": s.cron,
            "time_zone": s.time_zone,
            "task_type": s.task_type,
            "payload": s.payload or None,
            "max_attempts": s.max_attempts,
            "paused": s.paused,
            "next_slot_ms": _ms(s.next_slot),
            "created_ms": _ms(s.created_at),
            **({} if s.paused else self._index(s.next_slot)),
        }
        if self._store._write_if(
            "put_item",
            remaining,
            TableName=self.table,
            Item=typed(values),
            ConditionExpression="attribute_not_exists(#pk)",
            ExpressionAttributeNames={"#pk": schema.PK},
        ):
            return None
        return self.get(s.tenant, s.name, remaining)

    def get(self, tenant: str, name: str, remaining: float | None = None) -> Schedule | None:
        got = self._store._call(
            "get_item",
            remaining,
            TableName=self.table,
            Key=self._key(tenant, name),
            ConsistentRead=True,
        )
        return _from_item(got["Item"]) if "Item" in got else None

    def list_for_tenant(self, tenant: str, remaining: float | None = None) -> list[Schedule]:
        out: list[Schedule] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "#p = :p",
            "ExpressionAttributeNames": {"#p": schema.PK},
            "ExpressionAttributeValues": typed({":p": schema.schedules_pk(tenant)}),
            "ConsistentRead": True,
        }
        while True:
            page = self._store._call("query", remaining, **kwargs)
            out.extend(_from_item(i) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def set_paused(
        self, tenant: str, name: str, paused: bool, next_slot: datetime, remaining: float | None
    ) -> bool:
        """Pause (out of the index) or resume at `next_slot`; False if there is no such one."""
        names = {"#pk": schema.PK, "#op": schema.GSI_OUTBOX_PK, "#at": schema.GSI_OUTBOX_SK}
        if paused:
            update = "SET paused = :t REMOVE #op, #at"
            values: dict[str, Any] = {":t": True}
        else:
            update = "SET paused = :f, next_slot_ms = :next, #op = :active, #at = :next"
            values = {":f": False, ":next": _ms(next_slot), ":active": schema.SCHEDULES_DUE_PK}
        return self._store._write_if(
            "update_item",
            remaining,
            TableName=self.table,
            Key=self._key(tenant, name),
            UpdateExpression=update,
            ConditionExpression="attribute_exists(#pk)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=typed(values),
        )

    def delete(self, tenant: str, name: str, remaining: float | None = None) -> bool:
        """True if it was there."""
        got = self._store._call(
            "delete_item",
            remaining,
            TableName=self.table,
            Key=self._key(tenant, name),
            ReturnValues="ALL_OLD",
        )
        return "Attributes" in got

    # ---- the relay's ----
    def due(self, now: datetime, limit: int) -> tuple[list[Schedule], datetime | None]:
        """Active schedules whose next slot is at or before `now` (earliest first, at most
        `limit`), and the next slot after those if the query saw one (when to look again)."""
        page = self._store._call(
            "query",
            TableName=self.table,
            IndexName=schema.GSI_OUTBOX,
            KeyConditionExpression="#op = :active",
            ExpressionAttributeNames={"#op": schema.GSI_OUTBOX_PK},
            ExpressionAttributeValues=typed({":active": schema.SCHEDULES_DUE_PK}),
            Limit=limit + 1,
        )
        found: list[Schedule] = []
        upcoming = None
        for raw in page.get("Items", []):
            v = plain(raw)
            at = _at(int(v[schema.GSI_OUTBOX_SK]))
            if at > now or len(found) >= limit:
                upcoming = at if at > now else now
                break
            schedule = self.get(schema.schedule_tenant_of(v[schema.PK]), v[schema.SK])
            if schedule is not None and not schedule.paused:
                found.append(schedule)
        return found, upcoming

    def advance(self, s: Schedule, next_slot: datetime) -> bool:
        """Moves `s` from the slot it was read at to `next_slot`; False if another relay (or a
        pause, resume or delete) changed it since."""
        return self._store._write_if(
            "update_item",
            TableName=self.table,
            Key=self._key(s.tenant, s.name),
            UpdateExpression="SET next_slot_ms = :next, #at = :next",
            ConditionExpression="next_slot_ms = :read AND #op = :active",
            ExpressionAttributeNames={"#op": schema.GSI_OUTBOX_PK, "#at": schema.GSI_OUTBOX_SK},
            ExpressionAttributeValues=typed(
                {
                    ":next": _ms(next_slot),
                    ":read": _ms(s.next_slot),
                    ":active": schema.SCHEDULES_DUE_PK,
                }
            ),
        )
