"""A relay SIGKILLed between a schedule slot's submit and the schedule's advance (failpoint
schedule.after_submit), restarted as ECS would: its successor fires the same slot again and
the idempotent submit replays the one task, which runs once. Waits for the next minute's
slot (up to a minute)."""

from __future__ import annotations

import json
import uuid

import pytest
from chaos_support import Oracle
from conveyor import schedules
from conveyor.v1 import task_service_pb2 as pb
from conveyor_dev.local import oracle
from support import wait_for, wait_terminal

pytestmark = pytest.mark.chaos


def test_a_relay_killed_after_a_slots_submit_leaves_one_task_for_the_slot(with_oracle: Oracle):
    system = with_oracle.system
    system.spawn("api", "api")
    system.spawn("relay", "relay", {"CONVEYOR_FAILPOINTS": "schedule.after_submit=kill"})
    system.spawn("worker-1", "worker")
    system.wait_ready()
    name = f"kill-{uuid.uuid4().hex[:8]}"
    definition = pb.Schedule(
        name=name,
        cron="* * * * *",
        time_zone="UTC",
        task_type=oracle.TASK_TYPE,
        payload=json.dumps({"seconds": 0.2}).encode(),
    )
    with system.channel("acme") as channel:
        stub = system.stub(channel)
        created = stub.CreateSchedule(pb.CreateScheduleRequest(schedule=definition), timeout=10)
        slot = created.schedule.next_slot.ToDatetime().replace(tzinfo=schedules.zone("UTC"))

        relay = system.procs["relay"]
        assert relay.popen.wait(90) == -9, "the relay was not killed at its failpoint"
        system.respawn("relay", {})
        system.wait_ready()

        def advanced() -> bool:
            [listed] = stub.ListSchedules(pb.ListSchedulesRequest(), timeout=10).schedules
            return listed.next_slot.ToDatetime().replace(tzinfo=slot.tzinfo) > slot

        wait_for(advanced, 60, "the restarted relay to fire the slot again and advance it")
        stub.DeleteSchedule(pb.DeleteScheduleRequest(name=name), timeout=10)
        key = schedules.slot_key(name, slot)
        mine = [
            t
            for t in stub.ListTasks(pb.ListTasksRequest(), timeout=30)
            if t.idempotency_key.startswith(key)
        ]
        assert len(mine) == 1, [t.idempotency_key for t in mine]
        done = wait_terminal(stub, mine[0].task_id, timeout=60)

    assert done.state == pb.TASK_STATE_SUCCEEDED
    seen = with_oracle.observed()
    assert seen.executions[done.task_id] == 1
    assert seen.applied(done.task_id) == 1
