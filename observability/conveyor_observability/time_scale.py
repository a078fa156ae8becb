"""The rules sped up by one factor, for the drill (issue 17): every duration the alerts wait on
(burn windows, the SLO period, `for:` and range selectors in symptom alerts) divided by
`factor`, so the drill proves in minutes what the shipped rules promise in hours. Thresholds
are not durations and are kept: an age of 60 s is what the system measures. The 5-minute base
recordings keep their window (their name says 5m); with the windows under a day after scaling,
every burn window is computed from the raw counters. Shipped rules are never scaled: the
scaled files are written only where asked (`generate --time-scale N --out DIR`).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from conveyor_observability import durations
from conveyor_observability.rule_files import rendered_rule_files
from conveyor_observability.spec import BurnWindow, Spec

_RANGE_RE = re.compile(r"\[([1-9][0-9]*[wdhms])\]")


def scaled(duration: str, factor: int) -> str:
    """`duration` divided by `factor`, which must divide it into whole seconds."""
    total = durations.seconds(duration)
    if total % factor:
        raise ValueError(f"{duration} is not a whole number of seconds divided by {factor}")
    return durations.text(total // factor)


def scaled_spec(spec: Spec, factor: int) -> Spec:
    return replace(
        spec,
        period=scaled(spec.period, factor),
        burn_rate_alerts={
            severity: tuple(
                BurnWindow(
                    scaled(p.long_window, factor), scaled(p.short_window, factor), p.burn_rate
                )
                for p in pairs
            )
            for severity, pairs in spec.burn_rate_alerts.items()
        },
        symptom_alerts=tuple(
            replace(
                alert,
                for_=scaled(alert.for_, factor) if alert.for_ else alert.for_,
                expr=_RANGE_RE.sub(lambda m: f"[{scaled(m.group(1), factor)}]", alert.expr),
            )
            for alert in spec.symptom_alerts
        ),
    )


def scaled_rule_files(spec: Spec, factor: int, out: Path) -> dict[Path, str]:
    """The rule files of `spec` scaled by `factor`, keyed by their path under `out`."""
    return {
        out / path.name: text
        for path, text in rendered_rule_files(scaled_spec(spec, factor)).items()
    }
