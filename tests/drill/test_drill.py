"""The drill: a real fault in the running system, the rules (time-scaled by one factor) in a real
Prometheus, notifications through a real Alertmanager with the deployed routing. Exactly the
expected alerts reach the expected receivers within the rule's promised time, and resolve after
the fix (issue 17 item 1)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from conveyor_dev.emulators.backend import start_backend
from conveyor_dev.local.alertmanager import Alertmanager, alertmanager_binary, start_alertmanager
from conveyor_dev.local.prometheus import Prometheus, prometheus_binary, start_prometheus
from conveyor_dev.local.system import LocalSystem
from conveyor_observability import durations
from conveyor_observability.spec import load_spec
from conveyor_observability.time_scale import scaled_rule_files, scaled_spec
from support import start_system, submit, wait_for, wait_terminal

# One factor for every wait in the rules: 5 minutes become 5 seconds.
TIME_SCALE = 60
SCRAPE_SECONDS = 1

pytestmark = pytest.mark.skipif(
    prometheus_binary() is None or alertmanager_binary() is None,
    reason="needs Debian's prometheus and prometheus-alertmanager (.ci/run installs them)",
)


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalSystem, Alertmanager]]:
    workdir = tmp_path_factory.mktemp("drill")
    rules = scaled_rule_files(load_spec(), TIME_SCALE, workdir / "rules")
    (workdir / "rules").mkdir()
    for path, text in rules.items():
        path.write_text(text)
    with start_backend() as backend:
        system = start_system(workdir, backend, stack="dev", workers=1)
        manager = start_alertmanager(workdir / "alertmanager")
        prometheus: Prometheus | None = None
        try:
            prometheus = start_prometheus(
                system,
                interval_seconds=SCRAPE_SECONDS,
                rule_files=sorted(rules),
                alertmanager=manager.address,
            )
            ready = prometheus

            def healthy() -> bool:
                up = {r["metric"]["job"] for r in ready.query("up == 1")}
                return len(up) == 3 and not ready.query("ALERTS")

            # Before the first scrapes every component is absent: let those alerts clear.
            wait_for(healthy, 120, "every component up and no alert pending or firing")
            yield system, manager
        finally:
            if prometheus:
                prometheus.stop()
            manager.stop()
            system.stop()


def _promised_seconds(alert: str) -> float:
    """The alert's `for:` (scaled), plus an evaluation, a scrape and the group wait."""
    rule = next(a for a in scaled_spec(load_spec(), TIME_SCALE).symptom_alerts if a.alert == alert)
    return durations.seconds(rule.for_) + 2 * SCRAPE_SECONDS + 1


def test_a_killed_relay_pages_for_the_relay_and_resolves_when_it_is_back(drill) -> None:
    system, manager = drill
    killed_at = time.monotonic()
    system.signal("relay", signal.SIGKILL)
    system.procs["relay"].popen.wait()

    def page():
        return [
            n
            for n in manager.webhook.seen()
            if n.at > killed_at and n.status == "firing" and n.receiver == "page"
        ] or None

    fired = wait_for(page, 120, "the relay page")[0]
    names = {(a["labels"]["alertname"], a["labels"].get("job")) for a in fired.alerts}
    assert names == {("ConveyorComponentDown", "conveyor-relay")}
    fired_after = fired.at - killed_at
    print(
        f"relay SIGKILLed: ConveyorComponentDown fired after {fired_after:.1f} s "
        f"(promised {_promised_seconds('ConveyorComponentDown'):.0f} s + scheduling)"
    )

    back_at = time.monotonic()
    system.respawn("relay")
    system.wait_ready()

    def resolved():
        return [
            n
            for n in manager.webhook.seen()
            if n.at > back_at
            and n.status == "resolved"
            and any(a["labels"]["alertname"] == "ConveyorComponentDown" for a in n.alerts)
        ] or None

    wait_for(resolved, 120, "the relay page resolved")
    pages = {
        a["labels"]["alertname"]
        for n in manager.webhook.seen()
        if n.at > killed_at and n.receiver == "page"
        for a in n.alerts
    }
    assert pages == {"ConveyorComponentDown"}


def test_all_workers_killed_page_for_the_workers_and_the_waiting_tasks(drill) -> None:
    system, manager = drill
    killed_at = time.monotonic()
    system.signal("worker-1", signal.SIGKILL)
    system.procs["worker-1"].popen.wait()
    with system.channel("acme") as channel:
        stub = system.stub(channel)
        ids = [submit(stub, "demo.sleep", {"seconds": 0}).task.task_id for _ in range(3)]
    expected = {"ConveyorComponentDown", "ConveyorTasksNotConsumed"}

    def paged() -> set[str] | None:
        names = {
            a["labels"]["alertname"]
            for n in manager.webhook.seen()
            if n.at > killed_at and n.status == "firing" and n.receiver == "page"
            for a in n.alerts
        }
        return names if names >= expected else None

    assert wait_for(paged, 180, "the worker pages") == expected
    print(f"workers SIGKILLed: {sorted(expected)} paged after {time.monotonic() - killed_at:.1f} s")

    back_at = time.monotonic()
    system.respawn("worker-1")
    with system.channel("acme") as channel:
        for task_id in ids:
            wait_terminal(system.stub(channel), task_id)

    def resolved() -> bool:
        done = {
            a["labels"]["alertname"]
            for n in manager.webhook.seen()
            if n.at > back_at and n.status == "resolved"
            for a in n.alerts
            if a["status"] == "resolved"
        }
        return done >= expected

    wait_for(resolved, 180, "the worker pages resolved")
