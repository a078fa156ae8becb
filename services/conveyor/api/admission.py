"""Admission by the tenant's backlog: its tasks waiting to start (a quota) and the age of its
oldest (the freshness SLO), read from the store's queued index, so every API replica sees the
same.

A tenant whose oldest waiting task is older than CONVEYOR_TENANT_MAX_QUEUE_AGE_SECONDS (the
task-freshness SLO's threshold by default) is refused until its backlog drains: its flood can
then only late-start its own tasks, not burn everyone's freshness budget. A tenant with
CONVEYOR_TENANT_MAX_QUEUED_TASKS tasks waiting is refused until some start. Refusals are
QuotaExceeded (RESOURCE_EXHAUSTED, retry-after).

Each replica reads a tenant's backlog at most once per REFRESH_SECONDS: one key read for the
oldest task and a COUNT of at most the quota's keys (about 0.5 RCU per 80 tasks counted). The
count can therefore run past the quota by what the replicas admit within a refresh.
"""

from __future__ import annotations

import threading
import time

from conveyor.api.quotas import QuotaExceeded
from conveyor.store import TaskStore, now_ms

REFRESH_SECONDS = 2.0
# What a refused tenant is told to wait: a refresh and a bit, since nothing changes sooner here.
RETRY_AFTER_SECONDS = 5


class Admission:
    def __init__(self, store: TaskStore, max_queued: int, max_age_seconds: float) -> None:
        self._store = store
        self._max_queued = max_queued
        self._max_age_ms = int(max_age_seconds * 1000)
        self._seen: dict[str, tuple[float, int, int | None]] = {}  # tenant -> (at, count, oldest)
        self._lock = threading.Lock()

    def check(self, tenant: str, remaining: float | None = None) -> None:
        """Raise QuotaExceeded if the tenant's backlog is over its quota or too old."""
        with self._lock:
            seen = self._seen.get(tenant)
        if seen is None or time.monotonic() - seen[0] >= REFRESH_SECONDS:
            oldest = self._store.oldest_queued_ms(tenant, remaining)
            count = self._store.queued_count(tenant, self._max_queued, remaining)
            seen = (time.monotonic(), count, oldest)
            with self._lock:
                self._seen[tenant] = seen
        _, count, oldest = seen
        if count >= self._max_queued:
            raise QuotaExceeded(
                tenant,
                "queued",
                f"tenant {tenant} has {count} tasks waiting to start, its quota; "
                "retry once some have started",
                RETRY_AFTER_SECONDS,
            )
        if oldest is not None and now_ms() - oldest > self._max_age_ms:
            raise QuotaExceeded(
                tenant,
                "freshness",
                f"tenant {tenant}'s oldest task waiting to start has waited "
                f"{(now_ms() - oldest) // 1000} s, over {self._max_age_ms // 1000} s; "
                "retry once its backlog drains",
                RETRY_AFTER_SECONDS,
            )
