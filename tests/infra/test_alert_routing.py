"""The deployed Alertmanager routing, checked by amtool (Debian's prometheus-alertmanager):
pages and tickets reach different receivers; and by a real Alertmanager: a burn page inhibits
its own ticket and nothing else."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from conveyor_dev.local.system import free_port
from conveyor_infra.alert_routing import RECEIVERS, alertmanager_config, amp_definition
from support import wait_for

AMTOOL = shutil.which("amtool")
pytestmark = pytest.mark.skipif(AMTOOL is None, reason="needs amtool (prometheus-alertmanager)")


def _route(config: Path, *labels: str) -> str:
    done = subprocess.run(
        [str(AMTOOL), "config", "routes", "test", f"--config.file={config}", *labels],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    definition = yaml.safe_load(amp_definition("arn:aws:sns:eu-west-1:111122223333:a", "eu-west-1"))
    path = tmp_path / "alertmanager.yml"
    path.write_text(definition["alertmanager_config"])
    return path


@pytest.mark.parametrize(
    ("severity", "receiver"), [("page", "page"), ("ticket", "ticket"), ("warning", "ticket")]
)
def test_each_severity_reaches_its_receiver(config: Path, severity: str, receiver: str) -> None:
    assert _route(config, "alertname=ConveyorX", f"severity={severity}") == receiver


def _alertmanager_api(url: str, path: str, body: object | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{url}{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read() or b"null")


def test_a_burn_page_inhibits_its_own_ticket_only(tmp_path: Path) -> None:
    """A real Alertmanager with the deployed routing, receivers swapped for a webhook."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.skip("needs prometheus-alertmanager")
    hook = {"webhook_configs": [{"url": "http://127.0.0.1:9/unused"}]}
    config = tmp_path / "alertmanager.yml"
    config.write_text(yaml.safe_dump(alertmanager_config({r: hook for r in RECEIVERS})))
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), 30, "alertmanager ready")
        slo = {"sloth_id": "conveyor-task-success", "sloth_slo": "task-success"}
        sent = [
            {"alertname": "ConveyorTaskSuccessBudgetBurnPage", "severity": "page", **slo},
            {"alertname": "ConveyorTaskSuccessBudgetBurnTicket", "severity": "ticket", **slo},
            {"alertname": "ConveyorApiLatencyBudgetBurnTicket", "severity": "ticket",
             "sloth_id": "conveyor-api-latency"},
            {"alertname": "ConveyorDlqNotEmpty", "severity": "ticket"},
            {"alertname": "ConveyorOutboxStuck", "severity": "page"},
        ]  # fmt: skip
        _alertmanager_api(url, "/api/v2/alerts", [{"labels": labels} for labels in sent])

        def states() -> dict[str, bool] | None:
            alerts = _alertmanager_api(url, "/api/v2/alerts")
            assert isinstance(alerts, list)
            found = {a["labels"]["alertname"]: bool(a["status"]["inhibitedBy"]) for a in alerts}
            return found if len(found) == len(sent) else None

        assert wait_for(states, 30, "every alert received") == {
            "ConveyorTaskSuccessBudgetBurnPage": False,
            "ConveyorTaskSuccessBudgetBurnTicket": True,
            "ConveyorApiLatencyBudgetBurnTicket": False,
            "ConveyorDlqNotEmpty": False,
            "ConveyorOutboxStuck": False,
        }
    finally:
        process.terminate()
        process.wait(10)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
            return True
    except OSError:
        return False
