"""The task runtime knobs: the one definition of each (type, default, bounds, cross-field rule).

The services read them as `CONVEYOR_*` variables (`conveyor.settings`), the Pulumi program as
stack keys (`conveyor_infra.config`) and passes them on to the task definitions, so a stack the
services would refuse fails at `pulumi preview`, with the same message. Each consumer names a
knob in its own vocabulary by overriding `Knobs.knob_name`; the READMEs' knob tables are
rendered from these classes (tests/infra/knob_docs.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, Field, model_validator

from conveyor.domain import HEARTBEATS_PER_TIMEOUT, MAX_ATTEMPTS_LIMIT, MAX_RECEIVE_COUNT

# How long a stopping worker's hand-backs may take, all of them side by side, after the grace.
HAND_BACK_SECONDS = 4.0
# SQS caps a visibility timeout (and so a retry's backoff, applied through it) at 12 hours.
MAX_VISIBILITY_SECONDS = 43_200
# ECS's stopTimeout (SIGTERM to SIGKILL) is whole seconds, at most 120 on Fargate.
MAX_STOP_TIMEOUT_SECONDS = 120

_FRACTIONS = {2: "half", 3: "a third", 4: "a quarter"}
HEARTBEAT_FRACTION = _FRACTIONS[HEARTBEATS_PER_TIMEOUT]


@dataclass(frozen=True)
class Rule:
    """A cross-field rule. `text` names knobs as `{field_name}`, so the error a consumer raises
    and the docs say it in the same words, each with its own names for the knobs."""

    knob: str  # the knob the rule constrains (the docs list the rule under it)
    text: str
    holds: Callable[[Any], bool]

    def say(self, name: Callable[[str], str]) -> str:
        return self.text.format_map(_Names(name))


class _Names(dict[str, str]):
    def __init__(self, name: Callable[[str], str]) -> None:
        super().__init__()
        self._name = name

    def __missing__(self, key: str) -> str:
        return self._name(key)


class Knobs(BaseModel):
    """Base of the knob sections: checks every rule of every section a model includes, and
    reports all broken ones (plus the consumer's own `problems`) in one error."""

    RULES: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def knob_name(cls, field: str) -> str:
        """How the consumer's users spell a knob (an environment variable, a stack key)."""
        return field

    @classmethod
    def rules(cls) -> list[Rule]:
        return [rule for klass in cls.__mro__ for rule in vars(klass).get("RULES", ())]

    def problems(self) -> list[str]:
        """Every broken rule; a consumer with rules of its own extends this."""
        return [rule.say(self.knob_name) for rule in self.rules() if not rule.holds(self)]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self


class TenantQuotaKnobs(Knobs):
    """Per-tenant quotas, counted by each API replica (conveyor.api.quotas)."""

    tenant_submits_per_second: float = Field(
        default=100.0,
        gt=0,
        description=(
            "submits a tenant may make per second on each API replica; beyond, "
            "RESOURCE_EXHAUSTED with a retry-after"
        ),
    )
    tenant_submit_burst: int = Field(
        default=200, ge=1, description="submits a tenant may make at once before its rate applies"
    )
    tenant_max_queued_tasks: int = Field(
        default=10_000,
        ge=1,
        description=(
            "tasks waiting to start a tenant may have, over every API replica; beyond, its "
            "submits get RESOURCE_EXHAUSTED with a retry-after"
        ),
    )
    tenant_max_queue_age_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "how long a tenant's oldest task waiting to start may have waited (the "
            "task-freshness SLO's threshold) before its submits are refused until it drains"
        ),
    )
    tenant_max_streams: int = Field(
        default=4,
        ge=1,
        description=(
            "ListTasks and WatchTask streams a tenant may hold open on each API replica; "
            "beyond, RESOURCE_EXHAUSTED with a retry-after"
        ),
    )


class ApiKnobs(TenantQuotaKnobs):
    """What the API needs."""

    default_max_attempts: int = Field(
        default=5,
        ge=1,
        le=MAX_ATTEMPTS_LIMIT,
        description=(
            "attempts a task gets when its submit asks for none (a submit may ask for up to "
            f"{MAX_ATTEMPTS_LIMIT}); the queue's redrive policy moves a message to the DLQ at "
            f"{MAX_RECEIVE_COUNT} receives, above any task's attempts"
        ),
    )


class WorkerKnobs(Knobs):
    """What the worker needs."""

    visibility_timeout_seconds: int = Field(
        default=30,
        ge=5,
        le=MAX_VISIBILITY_SECONDS,
        description="the queue's visibility timeout, and how far each heartbeat extends it",
    )
    heartbeat_interval_seconds: float = Field(
        default=10.0, gt=0, description="how often a running task extends its message and lease"
    )
    lease_seconds: float = Field(
        default=30.0, gt=0, description="how far each heartbeat extends a running task's lease"
    )
    backoff_base_seconds: float = Field(
        default=1.0, gt=0, description="full-jitter exponential retry backoff: its base"
    )
    backoff_max_seconds: float = Field(
        default=60.0,
        gt=0,
        le=MAX_VISIBILITY_SECONDS,
        description="the backoff's cap (applied through the message's visibility timeout)",
    )
    shutdown_grace_seconds: float = Field(
        default=25.0,
        ge=0,
        description="after SIGTERM, how long in-flight tasks run on before they are handed back",
    )
    stop_timeout_seconds: int = Field(
        default=30,
        gt=0,
        le=MAX_STOP_TIMEOUT_SECONDS,
        description="ECS's stopTimeout (SIGTERM to SIGKILL), which the stack sets to it",
    )

    # A heartbeat must land before the message becomes visible again or the lease lapses, or a
    # healthy task would be handed to a second worker. Each extension lands within an interval
    # of its beat (its AWS calls are cut to fit one), and one beat may fail.
    RULES = (
        Rule(
            "heartbeat_interval_seconds",
            "{heartbeat_interval_seconds} must be at most "
            f"{HEARTBEAT_FRACTION} of {{visibility_timeout_seconds}}",
            lambda k: (
                k.heartbeat_interval_seconds * HEARTBEATS_PER_TIMEOUT
                <= k.visibility_timeout_seconds
            ),
        ),
        Rule(
            "heartbeat_interval_seconds",
            f"{{heartbeat_interval_seconds}} must be at most {HEARTBEAT_FRACTION} of "
            "{lease_seconds}",
            lambda k: k.heartbeat_interval_seconds * HEARTBEATS_PER_TIMEOUT <= k.lease_seconds,
        ),
        Rule(
            "backoff_base_seconds",
            "{backoff_base_seconds} must be at most {backoff_max_seconds}",
            lambda k: k.backoff_base_seconds <= k.backoff_max_seconds,
        ),
        Rule(
            "shutdown_grace_seconds",
            f"{{shutdown_grace_seconds}} must leave the hand-backs {HAND_BACK_SECONDS:g} s of "
            "{stop_timeout_seconds}",
            lambda k: k.shutdown_grace_seconds + HAND_BACK_SECONDS <= k.stop_timeout_seconds,
        ),
    )


class TaskRuntime(ApiKnobs, WorkerKnobs):
    """Every knob: what a stack configures."""
