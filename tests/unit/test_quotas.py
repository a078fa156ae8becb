"""Per-tenant quotas (conveyor.api.quotas): who is refused, and the retry-after they are told."""

from __future__ import annotations

import pytest
from conveyor.api.quotas import QuotaExceeded, Streams, SubmitRate


def test_a_tenant_gets_its_burst_then_is_told_when_the_next_token_is_due():
    rate = SubmitRate(rate=0.25, burst=2)  # a token every 4 s
    rate.take("acme")
    rate.take("acme")
    with pytest.raises(QuotaExceeded) as refused:
        rate.take("acme")
    assert (refused.value.tenant, refused.value.quota) == ("acme", "submit_rate")
    assert refused.value.retry_after == 4
    rate.take("globex")  # another tenant's bucket is its own


def test_a_batch_costs_a_token_a_task_and_a_refused_one_costs_nothing():
    rate = SubmitRate(rate=0.25, burst=10)
    rate.take("acme", 7)
    with pytest.raises(QuotaExceeded) as refused:
        rate.take("acme", 5)  # 3 left: 2 more are due in 8 s
    assert refused.value.retry_after == 8
    rate.take("acme", 3)  # the refused batch spent none
    fresh = SubmitRate(rate=0.25, burst=10)
    fresh.take("globex", 33)  # larger than the burst: costs the burst, else never admitted
    with pytest.raises(QuotaExceeded):
        fresh.take("globex")


def test_retry_after_is_at_least_a_second():
    rate = SubmitRate(rate=1000.0, burst=1)
    rate.take("acme")
    try:
        rate.take("acme")
    except QuotaExceeded as refused:  # unless a token came back in the meantime
        assert refused.retry_after == 1


def test_streams_are_counted_per_tenant_and_given_back_when_closed():
    streams = Streams(limit=2)
    with streams.opened("acme"), streams.opened("acme"):
        with pytest.raises(QuotaExceeded) as refused, streams.opened("acme"):
            pass
        assert refused.value.quota == "streams"
        with streams.opened("globex"):
            pass
    with streams.opened("acme"), streams.opened("acme"):
        pass  # both given back, even the refused attempt took none
