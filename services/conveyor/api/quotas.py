"""Per-tenant quotas of one API replica: submit rate (a token bucket) and open streams.

A refusal is QuotaExceeded, which the servicer answers with RESOURCE_EXHAUSTED and trailing
metadata `retry-after` (whole seconds). RESOURCE_EXHAUSTED means exactly this in Conveyor: the
caller went over its own quota, so the api-availability SLO does not count it as a server
fault; a server-wide capacity limit answers UNAVAILABLE instead (observability/slos.yaml).

Both are counted per replica, in memory: N API replicas admit up to N times the configured
rate and streams per tenant. Streams hold a replica's threads, so per replica is the right
unit for them; for the rate, the knob is documented as per replica.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

RETRY_AFTER = "retry-after"


class QuotaExceeded(Exception):
    def __init__(self, tenant: str, quota: str, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.tenant = tenant
        self.quota = quota  # the metric label: "submit_rate", "streams", "schedules", ...
        self.retry_after = max(1, retry_after)


class SubmitRate:
    """A token bucket per tenant: `rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, tenant: str, count: int = 1) -> None:
        """Spend `count` of `tenant`'s tokens (a batch submit: one a task), or raise
        QuotaExceeded saying when they are due, spending none. A batch larger than the
        burst costs the whole burst: it could never be admitted otherwise."""
        count = min(count, int(self._burst))
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(tenant, (self._burst, now))
            tokens = min(self._burst, tokens + (now - at) * self._rate)
            if tokens < count:
                self._buckets[tenant] = (tokens, now)
                wait = math.ceil((count - tokens) / self._rate)
                raise QuotaExceeded(
                    tenant,
                    "submit_rate",
                    f"tenant {tenant} is over its submit rate ({self._rate:g}/s); retry later",
                    wait,
                )
            self._buckets[tenant] = (tokens - count, now)


class Streams:
    """At most `limit` open streams (ListTasks, WatchTask) per tenant."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def opened(self, tenant: str) -> Iterator[None]:
        with self._lock:
            if self._open.get(tenant, 0) >= self._limit:
                raise QuotaExceeded(
                    tenant,
                    "streams",
                    f"tenant {tenant} has {self._limit} streams open, its limit; "
                    "close one or retry later",
                    1,
                )
            self._open[tenant] = self._open.get(tenant, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._open[tenant] -= 1
