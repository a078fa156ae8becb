"""The task API end to end: real gRPC over mTLS, real processes, the AWS emulator."""

from __future__ import annotations

import json
import signal
import threading
import uuid

import grpc
import pytest
from conveyor.v1 import task_service_pb2 as pb
from conveyor_dev.local.scrape import total
from conveyor_dev.local.system import LocalSystem
from support import cli, get, path_of, rpc_code, submit, wait_for, wait_state, wait_terminal

pytestmark = pytest.mark.integration


def test_submit_runs_to_succeeded_with_full_history(acme):
    response = submit(acme, "demo.sleep", {"seconds": 0.05})
    assert response.created
    assert response.task.state in (pb.TASK_STATE_PENDING, pb.TASK_STATE_QUEUED)

    task = wait_terminal(acme, response.task.task_id)

    assert task.state == pb.TASK_STATE_SUCCEEDED
    assert task.attempts == 1
    assert json.loads(task.result)["slept"] == 0.05
    history = get(acme, task.task_id)
    assert path_of(history) == ["PENDING", "QUEUED", "RUNNING", "SUCCEEDED"]
    assert [e.seq for e in history.events] == [1, 2, 3, 4]


def test_same_key_same_request_returns_the_original_task(acme):
    key = uuid.uuid4().hex
    first = submit(acme, "demo.sleep", {"seconds": 0.01}, key=key)
    again = submit(acme, "demo.sleep", {"seconds": 0.01}, key=key)

    assert first.created and not again.created
    assert again.task.task_id == first.task.task_id
    wait_terminal(acme, first.task.task_id)
    # The replay wrote nothing: the history is that of one task run once.
    assert path_of(get(acme, first.task.task_id)) == ["PENDING", "QUEUED", "RUNNING", "SUCCEEDED"]


def test_same_key_different_request_is_rejected(acme):
    key = uuid.uuid4().hex
    first = submit(acme, "demo.sleep", {"seconds": 0.01}, key=key)

    with pytest.raises(grpc.RpcError) as err:
        submit(acme, "demo.sleep", {"seconds": 0.02}, key=key)

    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first.task.task_id in err.value.details()
    assert key in err.value.details()


def _restart_api(system: LocalSystem, extra: dict[str, str]) -> None:
    system.signal("api", signal.SIGTERM)
    assert system.procs["api"].popen.wait(60) == 0
    system.respawn("api", extra)
    system.wait_ready()


def test_a_retried_submit_replays_after_the_default_attempts_changed(system):
    # The idempotency hash covers what the client sent (no max_attempts), not the default the
    # API derived from it: a deploy that changes the default between a submit and its retry
    # must not turn the retry into ALREADY_EXISTS.
    key = uuid.uuid4().hex
    with system.channel("acme") as channel:
        first = submit(system.stub(channel), "demo.sleep", {"seconds": 0}, key=key)
    assert first.task.max_attempts == 5
    _restart_api(system, {"CONVEYOR_DEFAULT_MAX_ATTEMPTS": "7"})
    try:
        with system.channel("acme") as channel:
            again = submit(system.stub(channel), "demo.sleep", {"seconds": 0}, key=key)
    finally:
        _restart_api(system, {})

    assert not again.created
    assert again.task.task_id == first.task.task_id


def test_concurrent_submits_with_one_key_create_one_task(acme):
    key = uuid.uuid4().hex
    barrier = threading.Barrier(12)
    results: list[pb.SubmitTaskResponse] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        response = submit(acme, "demo.sleep", {"seconds": 0.01}, key=key)
        with lock:
            results.append(response)

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(results) == 12
    assert len({r.task.task_id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    listed = [t for t in acme.ListTasks(pb.ListTasksRequest(), timeout=10)]
    assert sum(1 for t in listed if t.idempotency_key == key) == 1


def test_transient_failures_are_retried_until_success(acme):
    response = submit(acme, "demo.flaky", {"fail_times": 2}, max_attempts=5)

    task = wait_terminal(acme, response.task.task_id)

    assert task.state == pb.TASK_STATE_SUCCEEDED
    assert task.attempts == 3
    assert path_of(get(acme, task.task_id)) == [
        "PENDING", "QUEUED",
        "RUNNING", "QUEUED",
        "RUNNING", "QUEUED",
        "RUNNING", "SUCCEEDED",
    ]  # fmt: skip


def test_permanent_error_fails_without_retry(acme):
    task = wait_terminal(acme, submit(acme, "demo.reject", max_attempts=5).task.task_id)

    assert task.state == pb.TASK_STATE_FAILED
    assert task.attempts == 1
    assert "rejected" in task.last_error


def test_poison_task_ends_dead_with_its_message_in_the_dlq(acme, system: LocalSystem):
    response = submit(acme, "demo.poison", max_attempts=2)
    task = wait_terminal(acme, response.task.task_id)

    assert task.state == pb.TASK_STATE_DEAD
    assert task.attempts == 2
    assert "poison" in task.last_error
    assert path_of(get(acme, task.task_id))[-1] == "DEAD"
    listing = cli(system, "acme", "dlq", "inspect", "--limit", "50")
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if task.task_id in line)
    assert "DEAD" in row
    assert "poison" in row


def test_cancel_stops_a_running_task(acme):
    response = submit(acme, "demo.sleep", {"seconds": 30})
    wait_state(acme, response.task.task_id, {pb.TASK_STATE_RUNNING}, timeout=30)

    cancelled = acme.CancelTask(
        pb.CancelTaskRequest(task_id=response.task.task_id, reason="test"), timeout=10
    )

    assert cancelled.task.state == pb.TASK_STATE_CANCELLED
    # Honoured at the next heartbeat: the worker stops and the state stays CANCELLED.
    history = get(acme, response.task.task_id)
    assert path_of(history)[-1] == "CANCELLED"
    assert history.events[-1].detail == "test"
    again = acme.CancelTask(pb.CancelTaskRequest(task_id=response.task.task_id), timeout=10)
    assert again.task.version == cancelled.task.version  # a no-op, not a second transition


def test_cancelling_a_finished_task_is_a_failed_precondition(acme):
    task = wait_terminal(acme, submit(acme, "demo.sleep", {"seconds": 0}).task.task_id)

    code = rpc_code(lambda: acme.CancelTask(pb.CancelTaskRequest(task_id=task.task_id), timeout=10))

    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert get(acme, task.task_id).task.state == pb.TASK_STATE_SUCCEEDED


def test_watch_streams_each_state_until_terminal(acme):
    response = submit(acme, "demo.sleep", {"seconds": 0.5})

    seen = [
        t.state
        for t in acme.WatchTask(pb.WatchTaskRequest(task_id=response.task.task_id), timeout=30)
    ]

    assert seen[-1] == pb.TASK_STATE_SUCCEEDED
    assert pb.TASK_STATE_RUNNING in seen
    assert len(seen) == len(set(seen))  # one message per change, no repeats


def test_list_streams_newest_first_with_filters_and_paging(acme):
    task_type = "demo.reject"  # FAILED at once; tests run one at a time, so these are newest
    ids = [submit(acme, task_type).task.task_id for _ in range(5)]
    for task_id in ids:
        wait_terminal(acme, task_id)
    newest_first = list(reversed(ids))

    def listed(**kw: object) -> list[str]:
        request = pb.ListTasksRequest(task_type=task_type, **kw)
        return [t.task_id for t in acme.ListTasks(request, timeout=10)]

    wait_for(lambda: listed(page_size=2, limit=5) == newest_first, 10, "GSI")
    summaries = list(acme.ListTasks(pb.ListTasksRequest(task_type=task_type, limit=1)))
    assert summaries[0].payload == b""  # listing returns summaries
    assert listed(limit=3) == newest_first[:3]
    assert listed(state=pb.TASK_STATE_FAILED, limit=5) == newest_first
    assert not set(ids) & set(listed(state=pb.TASK_STATE_SUCCEEDED))


def test_tenants_cannot_see_or_touch_each_others_tasks(acme, globex):
    mine = submit(acme, "demo.sleep", {"seconds": 0.01}).task.task_id

    assert rpc_code(lambda: get(globex, mine)) == grpc.StatusCode.NOT_FOUND
    assert (
        rpc_code(lambda: globex.CancelTask(pb.CancelTaskRequest(task_id=mine), timeout=10))
        == grpc.StatusCode.NOT_FOUND
    )
    assert mine not in {t.task_id for t in globex.ListTasks(pb.ListTasksRequest(), timeout=10)}
    watch = globex.WatchTask(pb.WatchTaskRequest(task_id=mine), timeout=10)
    assert rpc_code(lambda: list(watch)) == grpc.StatusCode.NOT_FOUND
    # The same idempotency key is per tenant: globex gets its own task, not acme's.
    key = uuid.uuid4().hex
    a = submit(acme, "demo.sleep", {"seconds": 0.01}, key=key)
    b = submit(globex, "demo.sleep", {"seconds": 0.01}, key=key)
    assert b.created and a.task.task_id != b.task.task_id
    assert get(acme, mine).task.task_id == mine


def test_health_and_reflection_are_served(system: LocalSystem):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with system.channel("acme") as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="conveyor.v1.TaskService"), timeout=5
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert "conveyor.v1.TaskService" in names


def test_watches_are_capped_per_tenant_so_they_cannot_starve_other_calls(acme, globex):
    task_id = submit(acme, "demo.sleep", {"seconds": 30}).task.task_id
    theirs = submit(globex, "demo.sleep", {"seconds": 0.01}).task.task_id
    watches = []
    try:
        for _ in range(4):  # a tenant's streams (CONVEYOR_TENANT_MAX_STREAMS)
            stream = acme.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=30)
            next(stream)  # the watch is being served
            watches.append(stream)

        one_more = acme.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=30)
        assert rpc_code(lambda: next(one_more)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert get(acme, task_id).task.task_id == task_id  # other calls still served
        other = globex.WatchTask(pb.WatchTaskRequest(task_id=theirs), timeout=30)
        assert next(other).task_id == theirs  # and another tenant's watches
        other.cancel()
    finally:
        for stream in watches:
            stream.cancel()
        acme.CancelTask(pb.CancelTaskRequest(task_id=task_id), timeout=10)

    def new_watch() -> pb.Task | None:
        try:
            return next(acme.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=30))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                return None  # the server has not noticed the cancellations yet
            raise

    # Ended watches give their slots back (the server notices within a poll interval).
    assert wait_for(new_watch, 10, "a watch slot to free up").state == pb.TASK_STATE_CANCELLED


def test_submit_records_the_api_s_own_time_apart_from_its_aws_calls(system: LocalSystem, acme):
    api = [system.procs["api"].metrics_url]

    def seconds(name: str, **labels: str) -> float:
        return total(api, name, **labels)

    overhead = ("conveyor_api_overhead_seconds_sum", {"grpc_method": "SubmitTask"})
    handling = ("grpc_server_handling_seconds_sum", {"grpc_method": "SubmitTask"})
    aws = ("conveyor_aws_request_seconds_sum", {})
    cpu = ("conveyor_api_overhead_cpu_seconds_sum", {"grpc_method": "SubmitTask"})
    before = {n: seconds(n, **labels) for n, labels in (overhead, handling, aws, cpu)}
    count = seconds("conveyor_api_overhead_seconds_count", grpc_method="SubmitTask")
    for _ in range(5):
        submit(acme, "demo.noop", {})
    after = {n: seconds(n, **labels) for n, labels in (overhead, handling, aws, cpu)}
    used = {n: after[n] - before[n] for n in after}

    assert seconds("conveyor_api_overhead_seconds_count", grpc_method="SubmitTask") == count + 5
    # What the API adds is its handling time less the AWS calls it waited on (up to the
    # interceptor's own bookkeeping around the handler).
    own = used[overhead[0]]
    assert 0 < own < used[handling[0]]
    assert own == pytest.approx(used[handling[0]] - used[aws[0]], abs=0.05)
    # Its CPU part: the handler thread's CPU time outside the AWS calls, at most all of it.
    assert 0 < used[cpu[0]] <= own + 0.01
