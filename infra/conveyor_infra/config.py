"""Typed stack configuration: the `conveyor:*` keys of `Pulumi.<stack>.yaml`, plus `aws:region`.

`load()` reads every key, validates them all at once and raises one `ConfigError` that lists
every missing or invalid key by its full Pulumi name, so a forking team fixes its stack file in
one pass instead of one `pulumi preview` per typo.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pulumi
from conveyor.runtime import TaskRuntime
from conveyor.tasks.registry import MODULE_RE
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

PROJECT_NAMESPACE = "conveyor"
# Stack keys that are not their field's camelCase (the key predates the shared knob model).
_KEY_EXCEPTIONS = {"default_max_attempts": "maxAttempts"}

# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
)  # fmt: skip

# Fargate's valid (cpu units -> memory MiB) combinations. 256 CPU units take 512, 1024 or
# 2048 MiB only: 1536 is not offered (cfn-lint E3047).
FARGATE_MEMORY: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
    8192: tuple(range(16384, 61441, 4096)),
    16384: tuple(range(32768, 122881, 8192)),
}

# AWS Distro for OpenTelemetry collector v0.43.3 (it has every component the collector configs
# use) from ECR Public: the digest of its multi-platform image index.
COLLECTOR_IMAGE = (
    "public.ecr.aws/aws-observability/aws-otel-collector"
    "@sha256:8aa9ea5f67b8d318f7d6af24677e3c70f7098bc0631147cb5fa91addbe980b06"
)

# A tenant name becomes a certificate CN and part of a secret name.
TENANT_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"

# A variable of a fork's handlers. The program sets CONVEYOR_* and AWS_* itself.
HANDLER_VARIABLE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
RESERVED_VARIABLE_PREFIXES = ("CONVEYOR_", "AWS_")
# A Secrets Manager secret as ECS's `valueFrom` takes it: the secret's ARN (optionally with
# `:json-key:version-stage:version-id`), or its name when it lives in the stack's account and
# region. Secrets Manager ends every secret ARN with `-` and six random characters.
SECRET_ARN = re.compile(
    r"^(?P<secret>arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[\w/+=.@-]+-[A-Za-z0-9]{6})"
    r"(?::[^:]*:[^:]*:[^:]*)?$"
)
SECRET_NAME = re.compile(r"^[\w/+=.@-]{1,512}$")


def _handler_variable(name: str) -> str:
    if not HANDLER_VARIABLE.match(name):
        raise ValueError(f"{name!r} is not an environment variable name (A-Z, 0-9, _)")
    if name.startswith(RESERVED_VARIABLE_PREFIXES):
        raise ValueError(
            "the variables "
            + ", ".join(f"{p}*" for p in RESERVED_VARIABLE_PREFIXES)
            + " are Conveyor's own"
        )
    return name


def _secret_reference(value: str) -> str:
    pattern = SECRET_ARN if value.startswith("arn:") else SECRET_NAME
    if not pattern.match(value):
        raise ValueError(f"{value!r} is neither a Secrets Manager secret ARN nor a secret name")
    return value


HandlerVariable = Annotated[str, AfterValidator(_handler_variable)]
SecretReference = Annotated[str, AfterValidator(_secret_reference)]


def secret_resource(reference: str, region: str, account_id: str) -> str:
    """The IAM resource of a `worker.secrets` value: the secret's ARN without a JSON key, or,
    for a name, its ARN with the six characters Secrets Manager appends matched by `?`."""
    match = SECRET_ARN.match(reference)
    if match:
        return match["secret"]
    return f"arn:aws:secretsmanager:{region}:{account_id}:secret:{reference}-??????"


class ConfigError(pulumi.RunError):
    """The stack configuration is incomplete or invalid; the message lists every bad key."""


def stack_key(field: str) -> str:
    """The key (without the `conveyor:` namespace) that sets `field`."""
    return _KEY_EXCEPTIONS.get(field) or to_camel(field)


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=stack_key,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        frozen=True,
    )


class TaskSize(_Model):
    """Fargate task size; memory must be a combination Fargate accepts for the cpu."""

    cpu: int = 256
    memory: int = 512

    @field_validator("cpu")
    @classmethod
    def _fargate_cpu(cls, value: int) -> int:
        if value not in FARGATE_MEMORY:
            raise ValueError(f"must be one of {sorted(FARGATE_MEMORY)}")
        return value

    @model_validator(mode="after")
    def _fargate_combination(self) -> TaskSize:
        allowed = FARGATE_MEMORY[self.cpu]
        if self.memory not in allowed:
            raise ValueError(
                f"memory {self.memory} is not valid with cpu {self.cpu}: use one of "
                + ", ".join(map(str, allowed))
            )
        return self


class ApiServiceConfig(TaskSize):
    min_count: int = Field(default=1, ge=1)
    max_count: int = Field(default=2, ge=1)
    cpu_target_percent: float = Field(default=60.0, gt=0, le=100)

    @model_validator(mode="after")
    def _bounds(self) -> ApiServiceConfig:
        if self.max_count < self.min_count:
            raise ValueError("maxCount must be >= minCount")
        return self


class WorkerServiceConfig(TaskSize):
    # At least one worker: the backlog-per-task metric divides by the running task count.
    min_count: int = Field(default=1, ge=1)
    max_count: int = Field(default=4, ge=1)
    concurrency: int = Field(default=4, ge=1, le=256)
    backlog_per_task: float = Field(default=20.0, gt=0)
    # What the fork's handlers read: plain values, and variables ECS fills from Secrets Manager
    # (only the worker's execution role may read those secrets).
    env: dict[HandlerVariable, str] = Field(default_factory=dict)
    secrets: dict[HandlerVariable, SecretReference] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _bounds(self) -> WorkerServiceConfig:
        if self.max_count < self.min_count:
            raise ValueError("maxCount must be >= minCount")
        both = sorted(self.env.keys() & self.secrets.keys())
        if both:
            raise ValueError(f"{', '.join(both)} set in both env and secrets")
        return self


class RelayServiceConfig(TaskSize):
    # More than one relay is safe (MessageDeduplicationId = task id) and only buys availability.
    count: int = Field(default=1, ge=1, le=10)


class StackConfig(_Model, TaskRuntime):
    """Everything the program reads from the stack configuration. The task runtime knobs and
    their rules are `conveyor.runtime`'s, the services' own (infra/README.md lists them)."""

    region: str = Field(min_length=1)
    deploy_compute: bool = True
    tenants: list[Annotated[str, Field(pattern=TENANT_PATTERN)]] = Field(min_length=1)
    image: str | None = Field(default=None, min_length=1)
    # CONVEYOR_TASK_MODULES of the API and the worker: the modules that declare the task types
    # (conveyor.tasks.registry). The image ships none; both services refuse to start without.
    task_modules: list[Annotated[str, Field(pattern=MODULE_RE.pattern)]] = Field(
        default_factory=list
    )
    # From ECR Public (no Docker Hub pull limits), pinned by digest: see infra/README.md,
    # "Images", for where the digest comes from and how to refresh it.
    collector_image: str = COLLECTOR_IMAGE
    # The sidecar's hard memory limit (MiB): its cgroup limit, which memory_limiter's
    # limit_percentage is relative to. Without it the sidecar may use the whole task.
    collector_memory: int = Field(default=128, ge=64, le=2048)
    # Relative to the repository root; both are written by the observability tooling.
    collector_config_path: str = "observability/collector/ecs-sidecar.yaml"
    gateway_config_path: str = "observability/collector/gateway.yaml"
    prometheus_rules_dir: str = "observability/rules"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    cpu_architecture: Literal["X86_64", "ARM64"] = "X86_64"

    vpc_cidr: str = "10.40.0.0/16"
    availability_zones: int = Field(default=2, ge=2, le=3)
    nat_gateways: Literal["single", "per-az"] = "single"

    api: ApiServiceConfig = ApiServiceConfig()
    relay: RelayServiceConfig = RelayServiceConfig()
    # Tail sampling holds every trace for decision_wait in memory.
    trace_gateway: TaskSize = TaskSize(cpu=512, memory=1024)
    worker: WorkerServiceConfig = WorkerServiceConfig()
    api_port: int = Field(default=50051, ge=1024, le=65535)
    metrics_port: int = Field(default=9464, ge=1024, le=65535)
    api_listener_port: int = Field(default=443, ge=1, le=65535)
    api_internet_facing: bool = False
    api_allowed_cidrs: list[str] = Field(default_factory=list)
    api_dns_names: list[str] = Field(default_factory=list)

    message_retention_seconds: int = Field(default=345_600, ge=60, le=1_209_600)
    dlq_retention_seconds: int = Field(default=1_209_600, ge=60, le=1_209_600)
    high_throughput_fifo: bool = False

    table_deletion_protection: bool = False
    pitr_recovery_days: int = Field(default=35, ge=1, le=35)
    log_retention_days: int = 14
    secret_recovery_window_days: int = 7
    tls_ca_validity_days: int = Field(default=3650, ge=30)
    tls_leaf_validity_days: int = Field(default=365, ge=7)
    tls_renew_before_days: int = Field(default=30, ge=1)
    alarm_emails: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]] = Field(
        default_factory=list
    )

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc_cidr(cls, value: str) -> str:
        # Private subnets are VPC sixteenths, public ones quarters of the last sixteenth, and
        # AWS subnets are /28 at the smallest.
        if not 16 <= ipaddress.IPv4Network(value).prefixlen <= 22:
            raise ValueError("the VPC prefix length must be between /16 and /22")
        return value

    @field_validator("api_allowed_cidrs")
    @classmethod
    def _ipv4_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.IPv4Network(cidr)  # raises ValueError with a precise message
        return value

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(f"must be one of {LOG_RETENTION_DAYS}")
        return value

    @field_validator("secret_recovery_window_days")
    @classmethod
    def _recovery_window(cls, value: int) -> int:
        if value != 0 and not 7 <= value <= 30:
            raise ValueError("must be 0 (delete at once) or 7..30")
        return value

    @field_validator("tenants")
    @classmethod
    def _unique_tenants(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("tenant names must be unique")
        return value

    @classmethod
    def knob_name(cls, field: str) -> str:
        return stack_key(field)

    def problems(self) -> list[str]:
        """The runtime knobs' broken rules and the stack's own, all in one error."""
        problems = super().problems()
        if self.deploy_compute and self.image is None:
            problems.append("conveyor:image is required when deployCompute is true")
        # A FIFO message keeps its original enqueue time in the DLQ, so a DLQ with a shorter
        # retention than the source would drop dead letters before anyone could read them.
        if self.dlq_retention_seconds <= self.message_retention_seconds:
            problems.append("dlqRetentionSeconds must be longer than messageRetentionSeconds")
        small = [
            s
            for s in ("api", "relay", "worker")
            if getattr(self, s).memory < 2 * self.collector_memory
        ]
        if small:
            problems.append(
                f"collectorMemory {self.collector_memory} must be at most half the task memory "
                f"of {', '.join(small)}"
            )
        if self.tls_renew_before_days >= self.tls_leaf_validity_days:
            problems.append("tlsRenewBeforeDays must be shorter than tlsLeafValidityDays")
        return problems

    def allowed_api_cidrs(self) -> list[str]:
        return self.api_allowed_cidrs or [self.vpc_cidr]


def _is_plain_string(field_name: str) -> bool:
    annotation = StackConfig.model_fields[field_name].annotation
    return annotation in (str, str | None)


def _raw_values(config: pulumi.Config, region: str | None) -> dict[str, Any]:
    """Every key that is set, decoded: YAML objects, lists, numbers and booleans arrive as JSON."""
    values: dict[str, Any] = {}
    if region is not None:
        values["region"] = region
    for name, field in StackConfig.model_fields.items():
        if name == "region":
            continue
        assert field.alias is not None
        raw = config.get(field.alias)
        if raw is None:
            continue
        if _is_plain_string(name):
            values[name] = raw
            continue
        try:
            values[name] = json.loads(raw)
        except json.JSONDecodeError:
            values[name] = raw  # let validation name the key and the expected type
    return values


def _set_keys() -> set[str]:
    """Every `conveyor:*` key the stack file sets. `pulumi.Config` reads one named key at a time,
    so the set ones come from the runtime's config map (and PULUMI_CONFIG, how a CLI may pass
    it)."""
    from pulumi.runtime import config as runtime_config

    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    prefix = f"{PROJECT_NAMESPACE}:"
    return {key.removeprefix(prefix) for key in keys if key.startswith(prefix)}


def unknown_key_problems(keys: set[str]) -> list[str]:
    """A line for each key no field reads (a misspelt key would otherwise be ignored, its
    intended setting silently left at its default), with the nearest known key."""
    known = [
        f.alias for name, f in StackConfig.model_fields.items() if name != "region" and f.alias
    ]
    lines = []
    for key in sorted(keys - set(known)):
        near = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {PROJECT_NAMESPACE}:{near[0]}?" if near else ""
        lines.append(f"{PROJECT_NAMESPACE}:{key}: not a Conveyor stack key{hint}")
    return lines


def _without_key_marker(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Pydantic ends the location of a bad mapping key with "[key]"; the key is the place."""
    return loc[:-1] if loc[-1:] == ("[key]",) else loc


def _key(loc: tuple[int | str, ...]) -> str:
    loc = _without_key_marker(loc)
    if not loc:
        return "(stack configuration)"
    head = str(loc[0])
    if head == "region":
        return "aws:region"
    alias = StackConfig.model_fields[head].alias if head in StackConfig.model_fields else head
    rest = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[1:])
    return f"{PROJECT_NAMESPACE}:{alias}{rest}"


# Valid values for the keys without a default, so that when one of them is invalid the next pass
# still checks the other keys' rules (which never read these).
STAND_INS: dict[str, Any] = {"region": "stand-in", "tenants": ["stand-in"]}


def _drop(values: dict[str, Any], loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Remove what `loc` points at (a list as a whole), so the next pass uses the default."""
    loc = _without_key_marker(loc)
    path = loc[: next((i for i, part in enumerate(loc) if isinstance(part, int)), len(loc))]
    container: Any = values
    for part in path[:-1]:
        container = container.get(part) if isinstance(container, dict) else None
    if path and isinstance(container, dict):
        container.pop(path[-1], None)
    if len(path) == 1 and path[0] in STAND_INS:
        values[str(path[0])] = STAND_INS[str(path[0])]
    return path


def config_problems(values: Mapping[str, Any]) -> list[str]:
    """Every invalid key and broken rule, as `key: message` lines; empty if the config is valid.

    Pydantic skips a model's cross-field rules while one of its fields is invalid, so one pass
    would report in rounds (a bad minCount hides the cpu rule, any bad key hides the stack's
    rules). Each pass drops what it found invalid, and the next checks the rest on defaults.
    """
    remaining = copy.deepcopy(dict(values))
    dropped: set[tuple[int | str, ...]] = set()
    lines: list[str] = []
    while True:
        try:
            StackConfig.model_validate(remaining)
            return lines
        except ValidationError as exc:
            errors = [
                e for e in exc.errors() if not (e["type"] == "missing" and e["loc"] in dropped)
            ]
        if not errors:
            return lines
        for error in errors:
            line = f"{_key(error['loc'])}: {re.sub(r'^Value error, ', '', error['msg'])}"
            lines += [line] if line not in lines else []
        progress = {_drop(remaining, e["loc"]) for e in errors} - dropped
        if not progress - {()}:
            return lines
        dropped |= progress


def load() -> StackConfig:
    """Read and validate the stack configuration, or raise ConfigError listing every bad key."""
    region = pulumi.Config("aws").get("region")
    values = _raw_values(pulumi.Config(PROJECT_NAMESPACE), region)
    problems = unknown_key_problems(_set_keys()) + config_problems(values)
    if problems:
        raise ConfigError(
            f"invalid configuration for stack {pulumi.get_stack()}:\n"
            + "\n".join(f"  {line}" for line in problems)
        )
    return StackConfig.model_validate(values)
