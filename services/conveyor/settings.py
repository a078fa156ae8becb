"""Typed configuration from `CONVEYOR_*` environment variables (plus the standard AWS ones).

Each process composes the sections it needs, so the API never demands worker settings. Every
setting is validated at start; `load()` turns pydantic's error into one message that lists every
bad or missing variable by its environment name.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Annotated, TypeVar

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from conveyor.domain import LANES, lane_suffix
from conveyor.runtime import ApiKnobs, WorkerKnobs
from conveyor.tasks import registry

PREFIX = "CONVEYOR_"


def env_name(field: str) -> str:
    """The variable that sets `field` (the region's AWS names aside: see `_env_name`)."""
    return PREFIX + field.upper()


T = TypeVar("T")


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
    """The task queue and DLQ of each lane (domain.LANES), one pair of variables per lane:
    CONVEYOR_QUEUE_URL and CONVEYOR_DLQ_URL for the default lane, CONVEYOR_QUEUE_URL_<LANE> and
    CONVEYOR_DLQ_URL_<LANE> for each other one (`lane_url_fields`; a lane added to LANES needs
    its two fields here, which the check below demands)."""

    queue_url: str = Field(min_length=1)
    dlq_url: str = Field(min_length=1)
    queue_url_high: str = Field(min_length=1)
    dlq_url_high: str = Field(min_length=1)
    message_group_shards: int = Field(default=32, ge=1, le=1024)

    def lane_urls(self, lane: str) -> tuple[str, str]:
        """(queue URL, DLQ URL) of `lane`."""
        queue_field, dlq_field = lane_url_fields(lane)
        return str(getattr(self, queue_field)), str(getattr(self, dlq_field))

    def lane_url_settings(self) -> dict[str, str]:
        """Every lane's URL fields and values, to build other settings on the same queues."""
        return {f: str(getattr(self, f)) for lane in LANES for f in lane_url_fields(lane)}


def lane_url_fields(lane: str) -> tuple[str, str]:
    """The QueueSettings fields of `lane`'s queue and DLQ URLs (variables: `env_name`)."""
    suffix = lane_suffix(lane)
    return f"queue_url{suffix}", f"dlq_url{suffix}"


def queue_environment(urls: Mapping[str, tuple[T, T]]) -> dict[str, T]:
    """The variables that give each lane of `urls` (lane -> (queue URL, DLQ URL); the values
    may be anything, Pulumi outputs say) to QueueSettings. Every lane must be there."""
    if set(urls) != set(LANES):
        raise ValueError(f"queue URLs for lanes {sorted(urls)}, expected {sorted(LANES)}")
    return {
        env_name(field): url
        for lane in LANES
        for field, url in zip(lane_url_fields(lane), urls[lane], strict=True)
    }


_URL_FIELDS = {f for f in QueueSettings.model_fields if f.startswith(("queue_url", "dlq_url"))}
if {f for lane in LANES for f in lane_url_fields(lane)} != _URL_FIELDS:
    raise RuntimeError(f"QueueSettings' URL fields {sorted(_URL_FIELDS)} do not match LANES")


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
    # Priority lanes (conveyor.worker.lanes): after this many receives in a row served by a
    # higher lane while a lower one waited its turn, one receive asks the lower lane first, so
    # a saturated high lane leaves the default lane at least 1/(this + 1) of the receives.
    lane_turn_after: int = Field(default=3, ge=1, le=100)
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
