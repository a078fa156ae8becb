"""Builds the AWS-facing objects every process shares from its settings."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.aws import AwsClients, make_breaker
from conveyor.queue import TaskQueue
from conveyor.settings import AwsSettings, QueueSettings, StoreSettings
from conveyor.store import TaskStore


@dataclass(frozen=True)
class Deps:
    clients: AwsClients
    store: TaskStore
    queue: TaskQueue


def build(settings: object) -> Deps:
    """`settings` must include the AWS, store and queue sections (every service's does)."""
    if not (
        isinstance(settings, AwsSettings)
        and isinstance(settings, StoreSettings)
        and isinstance(settings, QueueSettings)
    ):
        raise TypeError(f"{type(settings).__name__} lacks the AWS, store or queue settings")
    clients = AwsClients(settings)
    store = TaskStore(clients, settings, make_breaker(settings, "dynamodb"))
    return Deps(clients, store, TaskQueue(clients, settings))
