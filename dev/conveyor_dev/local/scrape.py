"""Reading the services' /metrics endpoints (for the local summary and the tests)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def samples(url: str, timeout: float = 2.0) -> list[Sample]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def total(urls: Iterable[str], name: str, **labels: str) -> float:
    """Sum of sample `name` over every endpoint, keeping samples whose labels match."""
    return sum(
        s.value
        for url in urls
        for s in samples(url)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )
