"""A real Prometheus server scraping the local processes with the generated rules loaded.

Used by `make local` when Debian's `prometheus` is installed (so a user can watch the SLIs
and alerts evaluate) and by the observability tests (so rules are proven against the metrics
the services really export, not against a mock).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conveyor_dev.local.lifetime import popen_with_parent
from conveyor_dev.local.ready import wait_ready
from conveyor_dev.local.system import LocalSystem, free_port

RULES_DIR = Path(__file__).resolve().parents[3] / "observability" / "rules"


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def scrape_config(
    system: LocalSystem,
    interval_seconds: int,
    rule_files: Sequence[Path],
    alertmanager: str | None = None,
) -> dict:
    """One job per service kind, named as in ECS (`conveyor-api`, ...): the rules select on it.
    Alerts go to `alertmanager` (host:port) when given."""
    jobs: dict[str, list[str]] = {}
    for proc in system.procs.values():
        kind = proc.name.split("-")[0]
        jobs.setdefault(f"conveyor-{kind}", []).append(f"127.0.0.1:{proc.metrics_port}")
    alerting = (
        {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
        if alertmanager
        else {}
    )
    return {
        **({"alerting": alerting} if alerting else {}),
        "global": {
            "scrape_interval": f"{interval_seconds}s",
            "evaluation_interval": f"{interval_seconds}s",
        },
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]}
            for job, targets in sorted(jobs.items())
        ],
    }


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector."""
        query = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=5) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {body}")
        return list(body["data"]["result"])

    def fired(self, seconds: float) -> dict[str, set[str]]:
        """The alerts that fired in the last `seconds`, by severity."""
        window = max(1, math.ceil(seconds))
        result = self.query(f'max_over_time(ALERTS{{alertstate="firing"}}[{window}s])')
        by_severity: dict[str, set[str]] = {}
        for series in result:
            labels = series["metric"]
            by_severity.setdefault(labels.get("severity", ""), set()).add(labels["alertname"])
        return by_severity

    def get(self, path: str) -> Mapping[str, Any]:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as resp:
            return dict(json.load(resp))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_prometheus(
    system: LocalSystem,
    *,
    interval_seconds: int = 5,
    rule_files: Sequence[Path] | None = None,
    alertmanager: str | None = None,
    timeout: float = 30.0,
) -> Prometheus:
    binary = prometheus_binary()
    if binary is None:
        raise FileNotFoundError("prometheus is not installed (Debian package 'prometheus')")
    rules = sorted(RULES_DIR.glob("*.yaml")) if rule_files is None else list(rule_files)
    home = system.workdir / "prometheus"
    home.mkdir(exist_ok=True)
    config = home / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(system, interval_seconds, rules, alertmanager)))
    port = free_port()
    with open(home / "prometheus.log", "ab") as log:
        process = popen_with_parent(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", process)
    try:
        wait_ready(f"{server.url}/-/ready", process, home / "prometheus.log", "prometheus", timeout)
    except Exception:
        server.stop()
        raise
    return server
