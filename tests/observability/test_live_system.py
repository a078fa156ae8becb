"""The rules, dashboards and runbooks against the running system, not against a contract file:
a live scrape of every process, and a real Prometheus server evaluating the generated rules."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from conveyor.v1 import task_service_pb2 as pb
from conveyor_dev.emulators.backend import start_backend
from conveyor_dev.local.prometheus import prometheus_binary, start_prometheus
from conveyor_dev.local.scrape import samples
from conveyor_dev.local.system import LocalSystem
from conveyor_observability import inventory
from conveyor_observability.spec import load_spec
from support import FAST_RECOVERY, rpc_code, start_system, submit, wait_for, wait_terminal

# Every SLO the spec declares (per-type ones included): a new SLO needs no edit here.
SLOS = tuple(slo.name for slo in load_spec().slos)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSystem]:
    """The system after a load that exercises every outcome (so every labelled series exists)."""
    with start_backend() as backend:
        system = start_system(
            tmp_path_factory.mktemp("live"),
            backend,
            stack="dev",
            workers=1,
            tuning={**FAST_RECOVERY, "CONVEYOR_TENANT_MAX_STREAMS": "1"},
        )
        try:
            with system.channel("acme") as channel:
                stub = system.stub(channel)
                ids = [
                    submit(stub, "demo.sleep", {"seconds": 0.01}).task.task_id,
                    submit(stub, "demo.flaky", {"fail_times": 1}).task.task_id,
                    submit(stub, "demo.poison", max_attempts=1).task.task_id,
                    submit(stub, "demo.reject").task.task_id,
                ]
                cancelled = submit(stub, "demo.sleep", {"seconds": 30}).task.task_id
                watch = stub.WatchTask(pb.WatchTaskRequest(task_id=cancelled), timeout=30)
                next(watch)
                over_quota = stub.WatchTask(pb.WatchTaskRequest(task_id=cancelled), timeout=30)
                assert rpc_code(lambda: next(over_quota)) == grpc.StatusCode.RESOURCE_EXHAUSTED
                watch.cancel()
                stub.CancelTask(pb.CancelTaskRequest(task_id=cancelled), timeout=10)
                for task_id in ids:
                    wait_terminal(stub, task_id)
            yield system
        finally:
            system.stop()


def _scraped_names(system: LocalSystem) -> set[str]:
    return {s.name for proc in system.procs.values() for s in samples(proc.metrics_url)}


def test_every_metric_used_by_rules_dashboards_and_runbooks_is_exported(live: LocalSystem):
    def missing() -> dict[str, list[str]]:
        exported = _scraped_names(live) | inventory.recording_rule_names() | {"up"}
        used = inventory.referenced_metric_names()
        return {name: where for name, where in used.items() if name not in exported}

    # The relay publishes queue depths on its next sweep: allow it a few intervals.
    deadline = time.monotonic() + 15
    while missing() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert missing() == {}


@pytest.mark.skipif(prometheus_binary() is None, reason="needs Debian's 'prometheus' server")
def test_prometheus_evaluates_the_slo_rules_on_live_metrics(live: LocalSystem):
    prometheus = start_prometheus(live, interval_seconds=1)
    try:
        with live.channel("acme") as channel:
            stub = live.stub(channel)

            def sli_series() -> set[str] | None:
                submit(stub, "demo.sleep", {"seconds": 0})  # keep traffic flowing for rate()
                result = prometheus.query("slo:sli_error:ratio_rate5m")
                slos = {r["metric"].get("sloth_slo") for r in result if r["value"][1] != "NaN"}
                return slos if slos >= set(SLOS) else None

            wait_for(sli_series, 60, "an SLI error ratio for every SLO", every=1.0)

        up = prometheus.query('up{job=~"conveyor-(api|relay|worker)"} == 1')
        assert {r["metric"]["job"] for r in up} == {
            "conveyor-api",
            "conveyor-relay",
            "conveyor-worker",
        }
        groups = prometheus.get("/api/v1/rules")["data"]["groups"]
        assert len(groups) >= len(SLOS) + 1
        unhealthy = [
            (g["name"], r["name"], r.get("lastError"))
            for g in groups
            for r in g["rules"]
            if r.get("health") == "err"
        ]
        assert unhealthy == []
        # A healthy system at this traffic: the error ratio of task freshness is 0.
        freshness = prometheus.query('slo:sli_error:ratio_rate5m{sloth_slo="task-freshness"}')
        assert float(freshness[0]["value"][1]) == 0.0
    finally:
        prometheus.stop()


@pytest.mark.skipif(prometheus_binary() is None, reason="needs Debian's 'prometheus' server")
def test_the_first_task_of_a_type_to_die_is_an_increase_prometheus_sees(live: LocalSystem):
    """Every declared type's completion series is exported at 0 from the start: a series born
    at 1 shows no increase, and the first DEAD of a type in a worker would burn no budget."""
    prometheus = start_prometheus(live, interval_seconds=1)
    dead = (
        'conveyor_tasks_completed_total{job="conveyor-worker",task_type="demo.flaky",'
        'outcome="dead"}'
    )
    try:
        # No demo.flaky task has died in this worker: the series is there at 0 all the same.
        wait_for(lambda: prometheus.query(dead), 30, "the worker's demo.flaky DEAD series")
        with live.channel("acme") as channel:
            stub = live.stub(channel)
            task_id = submit(stub, "demo.flaky", {"fail_times": 5}, max_attempts=1).task.task_id
            assert wait_terminal(stub, task_id).state == pb.TASK_STATE_DEAD

        def seen() -> float | None:
            result = prometheus.query(f"sum(increase({dead}[1m]))")
            return float(result[0]["value"][1]) if result and float(result[0]["value"][1]) else None

        assert wait_for(seen, 30, "the first DEAD of demo.flaky as an increase") > 0
    finally:
        prometheus.stop()
