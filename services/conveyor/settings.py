"""Typed configuration from `CONVEYOR_*` environment variables (plus the standard AWS ones).

Each process composes the sections it needs, so the API never demands worker settings. Every
setting is validated at start; `load()` turns pydantic's error into one message that lists every
bad or missing variable by its environment name.
"""

from __future__ import annotations

import os
import socket
from typing import Annotated, TypeVar

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from conveyor.runtime import ApiKnobs, WorkerKnobs
from conveyor.tasks import registry

PREFIX = "CONVEYOR_"


def env_name(field: str) -> str:
    """The variable that sets `field` (the region's AWS names aside: see `_env_name`)."""
    return PREFIX + field.upper()


class ConfigError(Exception):
    """Raised at start-up when the environment does not describe a valid configuration."""


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True)

    @classmethod
    def knob_name(cls, field: str) -> str:
        """Names the knobs of `conveyor.runtime` in its errors by their variables."""
        return env_name(field)


class AwsSettings(_Base):
    aws_region: str = Field(
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"),
        min_length=1,
    )
    aws_endpoint_url: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ENDPOINT_URL")
    )
    # botocore's per-service endpoint variables: one service served elsewhere than the rest
    # (a local run with DynamoDB Local for DynamoDB and another emulator for SQS).
    aws_endpoint_url_dynamodb: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ENDPOINT_URL_DYNAMODB")
    )
    aws_endpoint_url_sqs: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ENDPOINT_URL_SQS")
    )
    aws_endpoint_url_secretsmanager: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ENDPOINT_URL_SECRETS_MANAGER")
    )
    aws_max_attempts: int = Field(default=3, ge=1, le=10)
    aws_connect_timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    aws_read_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_reset_seconds: float = Field(default=10.0, gt=0)

    def endpoint_for(self, service: str) -> str | None:
        """The endpoint of one AWS service ("dynamodb", "sqs", "secretsmanager"): its own
        variable, else AWS_ENDPOINT_URL, else None (AWS's regional endpoint)."""
        own = getattr(self, f"aws_endpoint_url_{service}", None)
        return own or self.aws_endpoint_url


class StoreSettings(_Base):
    table_name: str = Field(min_length=3, max_length=255)
    idempotency_ttl_seconds: int = Field(default=86_400, ge=60)
    outbox_shards: int = Field(default=4, ge=1, le=64)


class QueueSettings(_Base):
    queue_url: str = Field(min_length=1)
    dlq_url: str = Field(min_length=1)
    message_group_shards: int = Field(default=32, ge=1, le=1024)


class TelemetrySettings(_Base):
    # The `service.name` of traces and logs; each process has its own default.
    service_name: str | None = Field(default=None, min_length=1)
    metrics_listen: str = Field(pattern=r"^[^:]*:\d{1,5}$")
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    otlp_endpoint: str | None = None


class TlsSettings(_Base):
    """PEM material as files (local runs) or inline (ECS injects secrets as variables)."""

    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_pem: str | None = None
    tls_cert_pem: str | None = None
    tls_key_pem: str | None = None

    @model_validator(mode="after")
    def _one_source_each(self) -> TlsSettings:
        problems = [
            f"set exactly one of CONVEYOR_TLS_{part.upper()}_FILE and "
            f"CONVEYOR_TLS_{part.upper()}_PEM"
            for part in ("ca", "cert", "key")
            if (getattr(self, f"tls_{part}_file") is None)
            == (getattr(self, f"tls_{part}_pem") is None)
        ]
        if problems:
            raise ValueError("; ".join(problems))  # every part at once, not the first
        return self

    def pem(self, part: str) -> bytes:
        """The PEM bytes of `part` (ca, cert or key), from whichever source is set."""
        inline = getattr(self, f"tls_{part}_pem")
        if inline is not None:
            return str(inline).encode()
        with open(str(getattr(self, f"tls_{part}_file")), "rb") as fh:
            return fh.read()


class TaskTypeSettings(_Base):
    # The modules whose `@task` declarations are this deployment's task types, as
    # "package.module[,package.other]": the fork's own and/or the demo's (the image ships none).
    # The API serves only these types; the worker runs them. Both refuse to start without.
    task_modules: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("task_modules", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return registry.parse_modules(value) if isinstance(value, str) else value

    def task_types(self) -> registry.Registry:
        """The declared types of `task_modules` (importing them), or ConfigError."""
        try:
            return registry.load(self.task_modules)
        except (ValueError, ImportError) as exc:
            raise ConfigError(f"{env_name('task_modules')}: {exc}") from exc


class ApiSettings(
    AwsSettings,
    StoreSettings,
    QueueSettings,
    TelemetrySettings,
    TlsSettings,
    TaskTypeSettings,
    ApiKnobs,
):
    api_listen: str = Field(pattern=r"^[^:]*:\d{1,5}$|^\[.*\]:\d{1,5}$")
    # Plaintext health endpoint on loopback only, for the container health check.
    health_listen: str = Field(default="127.0.0.1:50052", pattern=r"^[^:]*:\d{1,5}$")
    api_max_workers: int = Field(default=16, ge=1, le=256)
    send_timeout_seconds: float = Field(default=1.0, gt=0, le=10)
    min_deadline_seconds: float = Field(default=0.05, ge=0, le=5)
    watch_poll_seconds: float = Field(default=0.5, gt=0, le=10)
    watch_max_seconds: float = Field(default=300.0, gt=0)
    # A ListTasks stream is cancelled after this long, read or not (its pages are the client's
    # to narrow: `limit`, a state or type filter).
    list_max_seconds: float = Field(default=60.0, gt=0)


class WorkerSettings(
    AwsSettings, StoreSettings, QueueSettings, TelemetrySettings, TaskTypeSettings, WorkerKnobs
):
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    worker_concurrency: int = Field(default=4, ge=1, le=256)
    # Long-poll length bounds how long shutdown waits for the poll to return its messages.
    poll_wait_seconds: int = Field(default=5, ge=0, le=20)
    # After a receive, wait this long before the next one unless the queue is behind, so that
    # receives come in batches (fewer requests per task, up to this much more queue delay).
    receive_linger_seconds: float = Field(default=0.5, ge=0, le=5)
    # How long a settled message may wait for a batch of deletes while other tasks are still
    # running (FIFO holds its group's next message back until it is deleted: keep it short).
    delete_linger_seconds: float = Field(default=0.25, ge=0, le=5)


class RelaySettings(AwsSettings, StoreSettings, QueueSettings, TelemetrySettings):
    relay_interval_seconds: float = Field(default=5.0, gt=0)
    outbox_age_seconds: float = Field(default=10.0, ge=0)
    relay_batch_size: int = Field(default=100, ge=1, le=1000)
    # How many due delayed tasks the relay enqueues side by side (each a read, a send and the
    # QUEUED write: three round trips); 1 enqueues them one at a time. 32: with 8, a burst of
    # 1,000 due on the embedded emulator left a third of the 2 cores idle, waiting on answers.
    relay_due_concurrency: int = Field(default=32, ge=1, le=64)
    # The DLQ compensator reads the whole DLQ (up to the limit): dead letters wait there for an
    # operator, and a message the redrive policy moves there later can be anywhere behind them.
    dlq_scan_limit: int = Field(default=10_000, ge=1, le=100_000)


S = TypeVar("S", bound=BaseSettings)


def _env_name(loc: str, model: type[BaseSettings]) -> str:
    """The variable to set for an error at `loc`: a field name, or (for aliased fields such as
    the region) one of its aliases, which pydantic reports instead of the field name."""
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        choices = [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else []
        if loc == name or loc in choices:
            return choices[0] if choices else env_name(name)
    return env_name(loc)


def load(model: type[S]) -> S:
    """Build `model` from the environment, or raise ConfigError naming every bad variable."""
    try:
        return model()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = [str(part) for part in err["loc"]]
            name = _env_name(loc[0], model) if loc else "(settings)"
            lines.append(f"  {name}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
