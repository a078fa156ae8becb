"""The whole system on one machine: backend, resources, certificates and the service processes.

`make local` and the integration, chaos and e2e tests all run through this class, so a test
exercises the same processes, settings and resources a user sees. Resources come from the
Pulumi program (conveyor_dev.emulators.provision.provision runs it under mocks and creates what it
declares), so there is one source of truth for queue attributes and table schema.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from conveyor.api.auth import secure_channel
from conveyor.settings import queue_environment
from conveyor.v1 import task_service_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor_dev.emulators.backend import Backend
from conveyor_dev.emulators.provision import LaneUrls
from conveyor_dev.inject.action_log import ACTION_LOG_VARIABLE
from conveyor_dev.local.certs import DeploymentCerts, generate_deployment
from conveyor_dev.local.lifetime import popen_with_parent

LAUNCHER = "conveyor_dev.inject.launch"
MODULES = {"api": "conveyor.api", "relay": "conveyor.relay", "worker": "conveyor.worker"}

# Tuned for a laptop demo and fast tests; production values come from the Pulumi stack.
LOCAL_TUNING = {
    "CONVEYOR_POLL_WAIT_SECONDS": "1",
    "CONVEYOR_VISIBILITY_TIMEOUT_SECONDS": "10",
    "CONVEYOR_HEARTBEAT_INTERVAL_SECONDS": "2",
    "CONVEYOR_LEASE_SECONDS": "10",
    "CONVEYOR_BACKOFF_BASE_SECONDS": "0.5",
    "CONVEYOR_BACKOFF_MAX_SECONDS": "4",
    "CONVEYOR_RELAY_INTERVAL_SECONDS": "1",
    "CONVEYOR_OUTBOX_AGE_SECONDS": "2",
    "CONVEYOR_WORKER_CONCURRENCY": "4",
    # Fewer groups per tenant and type than the two workers' 8 slots: another tenant's task
    # is delivered once each of a busy tenant's groups has a task in flight (conveyor.queue).
    "CONVEYOR_MESSAGE_GROUP_SHARDS": "4",
    "CONVEYOR_SHUTDOWN_GRACE_SECONDS": "10",
    "CONVEYOR_LOG_LEVEL": "INFO",
    "CONVEYOR_TASK_MODULES": "conveyor_dev.local.demo_handlers",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    metrics_port: int
    log_path: Path
    kind: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


@dataclass
class LocalSystem(LaneUrls):
    workdir: Path
    backend: Backend
    certs: DeploymentCerts
    table_name: str
    lane_urls: dict[str, tuple[str, str]]  # lane -> (queue URL, DLQ URL)
    tuning: dict[str, str]
    api_port: int = 0
    health_port: int = 0
    procs: dict[str, Proc] = field(default_factory=dict)
    # Armed, each service process records the AWS actions it performs there (conveyor.aws).
    action_log: Path | None = None

    @classmethod
    def provision(
        cls,
        workdir: Path,
        backend: Backend,
        tenants: tuple[str, ...],
        *,
        stack: str = "dev",
        tuning: Mapping[str, str] | None = None,
        action_log: Path | None = None,
    ) -> LocalSystem:
        """Create the stack's resources in the backend and the certificates; start nothing."""
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "logs").mkdir(exist_ok=True)
        resources = backend.provision(stack)
        certs = generate_deployment(workdir / "certs", tenants)
        return cls(
            workdir=workdir,
            backend=backend,
            certs=certs,
            table_name=resources.table_name,
            lane_urls=resources.lane_urls,
            tuning={**LOCAL_TUNING, **(tuning or {})},
            action_log=action_log,
        )

    # ---- processes ----
    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment every Conveyor process (and the operator CLI) gets."""
        env = self.backend.child_env()
        env.update(
            {
                "CONVEYOR_TABLE_NAME": self.table_name,
                **queue_environment(self.lane_urls),
                "PYTHONUNBUFFERED": "1",
                **self.tuning,
                **(extra or {}),
            }
        )
        return env

    def spawn(
        self,
        name: str,
        kind: str,
        extra: Mapping[str, str] | None = None,
        metrics_port: int | None = None,
    ) -> Proc:
        metrics_port = metrics_port or free_port()
        own = {
            "CONVEYOR_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
            "CONVEYOR_SERVICE_NAME": f"conveyor-{kind}",
            # botocore puts it in the User-Agent: the metering proxy bills per process.
            "AWS_SDK_UA_APP_ID": name,
        }
        if kind == "api":
            self.api_port = self.api_port or free_port()
            self.health_port = self.health_port or free_port()
            own.update(self.certs.server.env())
            own["CONVEYOR_API_LISTEN"] = f"127.0.0.1:{self.api_port}"
            own["CONVEYOR_HEALTH_LISTEN"] = f"127.0.0.1:{self.health_port}"
        if kind == "worker":
            own["CONVEYOR_WORKER_ID"] = name
        if self.action_log is not None:
            own[ACTION_LOG_VARIABLE] = str(self.action_log)
        log_path = self.workdir / "logs" / f"{name}.log"
        with open(log_path, "ab") as log:
            popen = popen_with_parent(
                # The guard makes a SIGKILL of us take them down too; the launcher installs
                # the development instrumentation (failpoints, AWS faults) the env asks for.
                [sys.executable, "-m", LAUNCHER, MODULES[kind]],
                env=self.env({**own, **(extra or {})}),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal goes to us, not the children
            )
        proc = Proc(name, popen, metrics_port, log_path, kind, dict(extra or {}))
        self.procs[name] = proc
        return proc

    def respawn(self, name: str, extra: Mapping[str, str] | None = None) -> Proc:
        """Start `name` again as it was started, as ECS replaces a task that died; `extra`
        replaces its extra environment when given."""
        old = self.procs[name]
        if old.popen.poll() is None:
            raise RuntimeError(f"{name} is still running (pid {old.popen.pid})")
        # Same /metrics address, so a Prometheus scraping it sees the replacement come back.
        extra = old.extra if extra is None else extra
        return self.spawn(name, old.kind, extra, metrics_port=old.metrics_port)

    def start(self, workers: int = 2, extra: Mapping[str, str] | None = None) -> None:
        self.spawn("api", "api", extra)
        self.spawn("relay", "relay", extra)
        for i in range(1, workers + 1):
            self.spawn(f"worker-{i}", "worker", extra)
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the API reports SERVING and every process serves /metrics."""
        import urllib.request

        deadline = time.monotonic() + timeout
        pending = set(self.procs)
        while pending:
            for name in sorted(pending):
                proc = self.procs[name]
                if proc.popen.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.popen.returncode}; see {proc.log_path}:\n"
                        + proc.log_path.read_text()[-3000:]
                    )
                try:
                    urllib.request.urlopen(proc.metrics_url, timeout=1).read()
                    if name == "api":
                        self._check_health()
                    pending.discard(name)
                except (OSError, grpc.RpcError):
                    pass
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout}s: {sorted(pending)}")
            if pending:
                time.sleep(0.2)

    def _check_health(self) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{self.health_port}") as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1
            )
        if status.status != health_pb2.HealthCheckResponse.SERVING:
            raise OSError("api not serving yet")

    def signal(self, name: str, sig: int) -> None:
        self.procs[name].popen.send_signal(sig)

    def stop(self, grace: float = 20.0) -> dict[str, int | None]:
        """SIGTERM everything, wait up to `grace`, SIGKILL stragglers; returns exit codes."""
        for proc in self.procs.values():
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        codes: dict[str, int | None] = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                codes[name] = proc.popen.wait()
        return codes

    # ---- clients ----
    @property
    def api_address(self) -> str:
        return f"127.0.0.1:{self.api_port}"

    def channel(self, tenant: str) -> grpc.Channel:
        return secure_channel(self.api_address, self.certs.clients[tenant].settings())

    def stub(self, channel: grpc.Channel) -> pb_grpc.TaskServiceStub:
        return pb_grpc.TaskServiceStub(channel)

    def cli_env(self, tenant: str) -> dict[str, str]:
        """Environment for the `conveyor` CLI acting as `tenant` (API and operator commands)."""
        return self.env(
            {"CONVEYOR_API_ADDRESS": self.api_address, **self.certs.clients[tenant].env()}
        )
