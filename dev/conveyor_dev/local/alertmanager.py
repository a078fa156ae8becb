"""A real Alertmanager (Debian's prometheus-alertmanager) loaded with the routing the stack
deploys (conveyor_infra.alert_routing), its receivers swapped for a local webhook whose
notifications the drill reads: routing, grouping and inhibition as in production.

Only the route's waits are shortened (group_wait, group_interval), by the drill's time scale.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from conveyor_infra.alert_routing import RECEIVERS, alertmanager_config

from conveyor_dev.local.lifetime import popen_with_parent
from conveyor_dev.local.ready import wait_ready
from conveyor_dev.local.system import free_port


def alertmanager_binary() -> str | None:
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@dataclass
class Notification:
    at: float  # monotonic
    receiver: str
    status: str  # firing | resolved
    alerts: list[dict[str, Any]]


@dataclass
class Webhook:
    """Collects what Alertmanager sends, per receiver (/<receiver>)."""

    notifications: list[Notification] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    def start(self) -> None:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with hook.lock:
                    hook.notifications.append(
                        Notification(
                            time.monotonic(), self.path.strip("/"), body["status"], body["alerts"]
                        )
                    )
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def seen(self) -> list[Notification]:
        with self.lock:
            return list(self.notifications)


@dataclass
class Alertmanager:
    address: str
    process: subprocess.Popen[bytes]
    webhook: Webhook

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_alertmanager(home: Path, *, group_wait: str = "1s", timeout: float = 30) -> Alertmanager:
    binary = alertmanager_binary()
    if binary is None:
        raise FileNotFoundError("Alertmanager is not installed (Debian prometheus-alertmanager)")
    webhook = Webhook()
    webhook.start()
    receivers = {
        name: {"webhook_configs": [{"url": f"http://127.0.0.1:{webhook.port}/{name}"}]}
        for name in RECEIVERS
    }
    config = alertmanager_config(receivers)
    config["route"].update({"group_wait": group_wait, "group_interval": group_wait})
    home.mkdir(parents=True, exist_ok=True)
    (home / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with open(home / "alertmanager.log", "ab") as log:
        process = popen_with_parent(
            [
                binary,
                f"--config.file={home / 'alertmanager.yml'}",
                f"--storage.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    manager = Alertmanager(f"127.0.0.1:{port}", process, webhook)
    try:
        ready = f"http://{manager.address}/-/ready"
        wait_ready(ready, process, home / "alertmanager.log", "alertmanager", timeout)
    except Exception:
        manager.stop()
        raise
    return manager
