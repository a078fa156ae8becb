"""The AWS backend that `make local` and the integration tests run against.

`start_backend()` picks, in this order (DESIGN.md §8):

1. **explicit** — `AWS_ENDPOINT_URL` is set (a running LocalStack, a sandbox account): it is
   used as is and nothing is started or stopped. Credentials come from the caller's own
   environment; none are invented.
2. **localstack** — a Docker engine answers: LocalStack in a container via testcontainers, with
   only SQS, DynamoDB and Secrets Manager enabled. The image is pinned to the last LocalStack
   release that starts without an account (`LOCALSTACK_IMAGE`); newer images (2026.03 and
   later) exit unless `LOCALSTACK_AUTH_TOKEN` is set, which is passed through when present.
   `CONVEYOR_LOCALSTACK_IMAGE` overrides the image.
3. **moto** — otherwise the embedded emulator: a moto server in a subprocess on a free
   loopback port, killed on close.

`CONVEYOR_BACKEND=explicit|localstack|moto` forces a choice.

Emulators are not AWS. Known gaps of moto that matter to Conveyor:

- SQS FIFO deduplication only compares against messages still in the queue, not a true
  5-minute window: a message deleted and re-sent with the same MessageDeduplicationId is
  accepted again, where AWS would drop it.
- Stale receipt handles are accepted: deleting or changing the visibility of a message with the
  receipt handle of an earlier delivery succeeds, where AWS fails or ignores it.
- No throttling, no service limits enforced the way AWS does, no eventual consistency.
- The server is not safe for concurrent access: parallel requests can race inside moto itself.

LocalStack is closer to AWS but has gaps of its own. A test that passes here shows the code
works against the emulator; an emulator quirk is never a proof of a property of AWS, and a
behaviour the emulator lacks (for instance deduplication after delete) is not tested by it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import IO, Any, Literal, cast, get_args

BackendKind = Literal["explicit", "localstack", "moto"]

FORCE_VAR = "CONVEYOR_BACKEND"
LOCALSTACK_IMAGE_VAR = "CONVEYOR_LOCALSTACK_IMAGE"
# 4.14.0 (February 2026) is the last LocalStack release that runs without an auth token.
LOCALSTACK_IMAGE = "localstack/localstack:4.14.0"
LOCALSTACK_SERVICES = ("sqs", "dynamodb", "secretsmanager")
LOCALSTACK_START_TIMEOUT_SECONDS = 120.0
MOTO_START_TIMEOUT_SECONDS = 30.0
MOTO_PORT_ATTEMPTS = 3
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
    _credentials: Mapping[str, str] = field(default_factory=dict, repr=False)
    _stop: Callable[[], None] | None = field(default=None, repr=False)
    # The emulator's process when this harness started one on this machine (fault tests
    # freeze it with SIGSTOP); None for an explicit endpoint or a container.
    pid: int | None = None

    def env(self) -> dict[str, str]:
        """The variables a child process needs to reach this backend.

        AWS_ENDPOINT_URL, AWS_REGION (and AWS_DEFAULT_REGION, which boto3 reads), plus fake
        credentials for the emulators. For an explicit endpoint no credentials are included:
        the child inherits the caller's.
        """
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            **self._credentials,
        }

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A complete environment for a subprocess: `base` (default: os.environ) with env()
        applied; for emulators, profile and session-token variables are dropped as well."""
        merged = dict(os.environ if base is None else base)
        if self.kind != "explicit":
            for name in _REAL_IDENTITY_VARS:
                merged.pop(name, None)
        merged.update(self.env())
        return merged

    def client(self, service_name: str, **kwargs: Any) -> Any:
        """A boto3 client for `service_name` pointed at this backend; `kwargs` override."""
        import boto3

        options: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": self._credentials.get("AWS_ACCESS_KEY_ID"),
            "aws_secret_access_key": self._credentials.get("AWS_SECRET_ACCESS_KEY"),
        }
        return boto3.client(service_name, **{**options, **kwargs})

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
        return Backend("explicit", env["AWS_ENDPOINT_URL"], region)
    if kind == "localstack":
        return _start_localstack(env, region)
    return _start_moto(region)


def choose_backend(environ: Mapping[str, str]) -> BackendKind:
    """Which backend start_backend() would use for `environ`, without starting anything."""
    forced = environ.get(FORCE_VAR, "")
    choices = get_args(BackendKind)
    if forced and forced not in choices:
        raise BackendError(f"{FORCE_VAR}={forced!r}: expected one of {', '.join(choices)}")
    endpoint = environ.get("AWS_ENDPOINT_URL", "")
    if forced == "explicit" and not endpoint:
        raise BackendError(f"{FORCE_VAR}=explicit needs AWS_ENDPOINT_URL")
    if forced:
        if forced == "localstack" and not docker_available():
            raise BackendError(
                f"{FORCE_VAR}=localstack but no Docker engine answers; start Docker, or use "
                f"{FORCE_VAR}=moto for the embedded emulator"
            )
        return cast(BackendKind, forced)
    if endpoint:
        return "explicit"
    return "localstack" if docker_available() else "moto"


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
            "LOCALSTACK_AUTH_TOKEN; set CONVEYOR_BACKEND=moto to use the embedded emulator"
        ) from exc
    return Backend("localstack", url, region, EMULATOR_CREDENTIALS, container.stop)


def _start_moto(region: str) -> Backend:
    """Run `python -m moto.server` on a free loopback port and wait until it answers.

    The port is chosen before the server binds it, so another process can take it in between;
    a server that exits before answering is retried on a new port a few times.
    """
    deadline = time.monotonic() + MOTO_START_TIMEOUT_SECONDS
    attempt = 0
    while True:
        attempt += 1
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        # Outlives this function: _stop() closes it when the server stops.
        log = tempfile.TemporaryFile()  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "conveyor.local.emulator_server",
                "-H",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Out of the terminal's process group: Ctrl-C reaches the caller, which stops the
            # services gracefully (they may still need AWS) and then closes this backend.
            start_new_session=True,
        )
        if _wait_until_answering(proc, url, deadline):
            return Backend(
                "moto", url, region, EMULATOR_CREDENTIALS, partial(_stop, proc, log), proc.pid
            )
        exit_code = proc.poll()
        if exit_code is not None and attempt < MOTO_PORT_ATTEMPTS and time.monotonic() < deadline:
            _stop(proc, log)
            continue
        _terminate(proc)
        why = (
            f"exited with code {exit_code} before answering"
            if exit_code is not None
            else f"did not answer within {MOTO_START_TIMEOUT_SECONDS:.0f} s"
        )
        raise BackendError(f"the moto server on {url} {why}; its output:\n{_tail(log)}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# A loopback probe must not go through an HTTP(S)_PROXY from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _wait_until_answering(proc: subprocess.Popen[bytes], url: str, deadline: float) -> bool:
    """Poll the moto dashboard until it answers, the process exits, or the deadline passes."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with _NO_PROXY.open(f"{url}/moto-api/", timeout=1) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
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


def _stop(proc: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    _terminate(proc)
    log.close()


def _tail(log: IO[bytes], max_bytes: int = 4000) -> str:
    log.seek(0)
    text = log.read().decode(errors="replace")[-max_bytes:]
    log.close()
    return text
