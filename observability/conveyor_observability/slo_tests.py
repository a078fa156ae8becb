"""promtool scenarios for every SLO's burn alerts, derived from the spec.

Each scenario feeds constant traffic whose error ratio moves through phases, expressed in
multiples of the error budget ("burn"). What the alerts must do is worked out by `BurnOracle`
in plain arithmetic, independent of the PromQL under test, at minutes chosen a margin away from
every threshold crossing. The generator refuses a scenario that does not show what its name
says (for example a "ticket" burn that would also page), so a policy change cannot quietly turn
the tests into no-ops.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from conveyor_observability import durations
from conveyor_observability.promtool_tests import AlertCheck, Scenario
from conveyor_observability.series import cumulative
from conveyor_observability.slo_rules import (
    COVERED_SEVERITIES,
    burn_alert_name,
    number,
    slo_labels,
)
from conveyor_observability.spec import BurnWindow, Slo, Spec

# Rules run every 5 minutes here (1 in production): the scenarios span days of history, and
# a 1-minute evaluation of 30-day windows over them takes minutes per file for no extra proof.
EVALUATION_INTERVAL = "5m"
TRAFFIC_PER_MINUTE = Decimal(1000)
BASELINE_SHARE = Decimal("0.5")  # healthy burn, as a share of the lowest alert factor
HEALTHY_SHARE = Decimal("0.9")  # "almost burning": just under the lowest alert factor
MIN_MARGIN_MINUTES = 10


@dataclass(frozen=True)
class Phase:
    minutes: int
    burn: Decimal  # error ratio / error budget


class ScenarioError(ValueError):
    """The spec's policy leaves a scenario unable to show what it is named for."""


class BurnOracle:
    """Whether each severity's burn alert should fire, minute by minute, for `phases` of
    constant traffic. Increment k (minute k-1 to k) burns at its phase's rate; a window of W
    minutes ending at t averages increments t-W+1..t (or from 1 while history is shorter).
    A pair of a covered severity also needs a recording (the first is one evaluation in) within
    its short window's length of the long window's start."""

    def __init__(
        self,
        phases: Sequence[Phase],
        policy: Mapping[str, Sequence[BurnWindow]],
        traffic_per_minute: Decimal,
        min_events_per_hour: Decimal,
    ) -> None:
        burns = [float(p.burn) for p in phases for _ in range(p.minutes)]
        self._prefix = [0.0, *itertools.accumulate(burns)]
        self._policy = policy
        self._enough_traffic = traffic_per_minute * 60 >= min_events_per_hour
        self.last_minute = len(burns)

    def burn_over(self, end: int, window: str) -> float:
        start = max(0, end - durations.minutes(window))
        return (self._prefix[end] - self._prefix[start]) / (end - start)

    def fires(self, severity: str, minute: int) -> bool:
        return self._enough_traffic and any(
            self.burn_over(minute, pair.long_window) > pair.burn_rate
            and self.burn_over(minute, pair.short_window) > pair.burn_rate
            and (severity not in COVERED_SEVERITIES or self._covered(minute, pair))
            for pair in self._policy[severity]
        )

    @staticmethod
    def _covered(minute: int, pair: BurnWindow) -> bool:
        first_recording = durations.minutes(EVALUATION_INTERVAL)
        since = durations.minutes(pair.long_window) - durations.minutes(pair.short_window)
        return minute - since >= first_recording

    def first(self, severity: str, start: int, firing: bool) -> int:
        """The first minute from `start` at which the alert is (not) firing."""
        for minute in range(max(start, 1), self.last_minute + 1):
            if self.fires(severity, minute) == firing:
                return minute
        state = "fires" if firing else "is silent"
        raise ScenarioError(f"no minute from {start} on where the {severity} alert {state}")


def slo_scenarios(spec: Spec, slo: Slo) -> list[Scenario]:
    factors = sorted({pair.burn_rate for pairs in spec.burn_rate_alerts.values() for pair in pairs})
    scenarios = []
    for severity, pairs in spec.burn_rate_alerts.items():
        for pair in pairs:
            higher = [f for f in factors if f > pair.burn_rate]
            burn = (pair.burn_rate + higher[0]) / 2 if higher else pair.burn_rate * Decimal("1.4")
            scenarios.append(_burn_scenario(spec, slo, severity, pair, burn, factors[0]))
    scenarios.append(_healthy_scenario(spec, slo, factors[0]))
    scenarios += _low_traffic_scenarios(spec, slo, factors[-1])
    return scenarios


def _burn_scenario(
    spec: Spec, slo: Slo, severity: str, pair: BurnWindow, burn: Decimal, lowest: Decimal
) -> Scenario:
    """Healthy history, then `burn` until the alert has fired, then (for pages) healthy again
    until the short windows reset it. The history lasts the pair's long window; for pages the
    longest page window, or the 6h window, short of history, would fire before the 1h one."""
    warmup = durations.minutes(pair.long_window)
    if severity == "page":
        warmup = max(durations.minutes(p.long_window) for p in spec.burn_rate_alerts[severity])
    margin = _margin(pair.long_window)
    baseline = lowest * BASELINE_SHARE
    probe = _oracle(spec, slo, [Phase(warmup, baseline), Phase(4 * warmup, burn)])
    fired = probe.first(severity, warmup, firing=True)
    burn_minutes = _evaluated(fired + margin, up=True) - warmup
    phases = [Phase(warmup, baseline), Phase(burn_minutes, burn)]
    minutes = [_evaluated(fired - margin, up=False), warmup + burn_minutes]
    if severity == "page":
        tail = _oracle(spec, slo, [*phases, Phase(4 * warmup, baseline)])
        reset = _evaluated(
            tail.first(severity, warmup + burn_minutes + 1, firing=False) + margin, up=True
        )
        phases.append(Phase(reset - warmup - burn_minutes, baseline))
        minutes.append(reset)
    oracle = _oracle(spec, slo, phases)
    # Every other severity is checked at the same minutes and must stay silent: a ticket
    # beside a page on a Prometheus younger than the ticket's windows is noise (issue 17).
    checks = _checks(spec, slo, oracle, {s: minutes for s in spec.burn_rate_alerts})
    _require(
        [oracle.fires(severity, m) for m in minutes] == [False, True, False][: len(minutes)]
        and not any(c.firing for c in checks if c.alert != burn_alert_name(spec, slo, severity)),
        f"{slo.name}: a {number(burn)}x burn does not show the {severity} alert alone firing",
    )
    what = (
        "pages alone (no ticket on this much history), and the page resolves once the short "
        "windows recover"
        if severity == "page"
        else "opens a ticket and never pages"
    )
    return Scenario(
        name=f"{slo.name}: a {number(burn)}x burn (over the {pair.long_window}/"
        f"{pair.short_window} threshold of {number(pair.burn_rate)}x) after {_hours(warmup)} "
        f"of {number(baseline)}x {what}",
        series=_series(slo, phases, TRAFFIC_PER_MINUTE),
        checks=checks,
    )


def _healthy_scenario(spec: Spec, slo: Slo, lowest: Decimal) -> Scenario:
    burn = lowest * HEALTHY_SHARE
    # As long as the longest window and an hour: a ticket's pair speaks only once its long
    # window is covered (slo_rules.COVERED_SEVERITIES).
    phases = [Phase(_longest_window_minutes(spec) + 60, burn)]
    oracle = _oracle(spec, slo, phases)
    checks = _checks(spec, slo, oracle, _at_every_long_window(spec))
    _require(not any(c.firing for c in checks), f"{slo.name}: {number(burn)}x burn alerts")
    return Scenario(
        name=f"{slo.name}: a steady {number(burn)}x burn, just under every threshold, is silent",
        series=_series(slo, phases, TRAFFIC_PER_MINUTE),
        checks=checks,
    )


def _low_traffic_scenarios(spec: Spec, slo: Slo, highest: Decimal) -> list[Scenario]:
    """The same heavy burn under the low-traffic guard (silent) and just above it (pages)."""
    burn = min(highest * 2, Decimal("0.5") / slo.error_budget)
    phases = [Phase(_longest_window_minutes(spec) + 60, burn)]
    scenarios = []
    for share, expect_page in ((Decimal("0.5"), False), (Decimal(2), True)):
        traffic = slo.min_events_per_hour * share / 60
        oracle = _oracle(spec, slo, phases, traffic)
        if expect_page:
            fired = oracle.first("page", 1, firing=True)
            at = _evaluated(fired + MIN_MARGIN_MINUTES, up=True)
            checks = _checks(spec, slo, oracle, {"page": [at]})
        else:
            checks = _checks(spec, slo, oracle, _at_every_long_window(spec))
        _require(
            any(c.firing for c in checks) == expect_page,
            f"{slo.name}: the low-traffic guard scenario at {number(share)}x the guard fails",
        )
        state = "pages" if expect_page else "is silent"
        scenarios.append(
            Scenario(
                name=f"{slo.name}: a {number(burn)}x burn at {number(share)}x the "
                f"low-traffic guard ({number(slo.min_events_per_hour * share)} events per hour) "
                f"{state}",
                series=_series(slo, phases, traffic),
                checks=checks,
            )
        )
    return scenarios


def _checks(
    spec: Spec, slo: Slo, oracle: BurnOracle, minutes: Mapping[str, Sequence[int]]
) -> list[AlertCheck]:
    labels = slo_labels(spec, slo)
    return [
        AlertCheck(
            minute=minute,
            alert=burn_alert_name(spec, slo, severity),
            firing=[labels] if oracle.fires(severity, minute) else [],
        )
        for severity, at in minutes.items()
        for minute in at
    ]


def _at_every_long_window(spec: Spec) -> dict[str, list[int]]:
    """Just past the end of every long window, for every severity. The silent scenarios burn
    at a constant rate, so every window sees the same ratio once it holds two samples and, for
    a covered severity, data from its start."""
    step = durations.minutes(EVALUATION_INTERVAL)
    ends = sorted(
        {
            durations.minutes(pair.long_window) + step
            for pairs in spec.burn_rate_alerts.values()
            for pair in pairs
        }
    )
    return {severity: ends for severity in spec.burn_rate_alerts}


def _longest_window_minutes(spec: Spec) -> int:
    return max(
        durations.minutes(pair.long_window)
        for pairs in spec.burn_rate_alerts.values()
        for pair in pairs
    )


def _series(slo: Slo, phases: Sequence[Phase], traffic: Decimal) -> dict[str, str]:
    """Input counters: `traffic` events a minute, a burn x budget share of them bad."""
    bad = [(p.minutes, traffic * p.burn * slo.error_budget) for p in phases]
    good = [
        (p.minutes, traffic - per_minute) for p, (_, per_minute) in zip(phases, bad, strict=True)
    ]
    every = [(p.minutes, traffic) for p in phases]
    out: dict[str, str] = {}
    for names, counts in (
        (slo.test_series.good, good),
        (slo.test_series.bad, bad),
        (slo.test_series.all, every),
    ):
        share = (
            [(minutes, per_minute / len(names)) for minutes, per_minute in counts] if names else []
        )
        for name in names:
            out[name] = cumulative(share)
    return out


def _oracle(
    spec: Spec, slo: Slo, phases: Sequence[Phase], traffic: Decimal = TRAFFIC_PER_MINUTE
) -> BurnOracle:
    return BurnOracle(phases, spec.burn_rate_alerts, traffic, slo.min_events_per_hour)


def _margin(window: str) -> int:
    """How far from a threshold crossing to look: rate() extrapolation and the 5-minute
    recordings behind long windows shift crossings by a few minutes."""
    return max(MIN_MARGIN_MINUTES, durations.minutes(window) // 50)


def _evaluated(minute: int, up: bool) -> int:
    """The evaluation at or after (up) or at or before `minute`."""
    step = durations.minutes(EVALUATION_INTERVAL)
    return -(-minute // step) * step if up else minute // step * step


def _hours(minutes: int) -> str:
    return f"{minutes // 60}h"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ScenarioError(f"SLO test scenario does not hold: {message}")
