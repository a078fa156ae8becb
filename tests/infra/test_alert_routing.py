"""The deployed Alertmanager routing, checked by amtool (Debian's prometheus-alertmanager):
pages and tickets reach different receivers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conveyor_infra.alert_routing import amp_definition

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
