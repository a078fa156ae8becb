"""The SLO spec (observability/slos.yaml): loading and validation.

Numbers that end up in PromQL (objectives, burn rates) are kept as Decimal so that the rules say
`0.001`, not `0.0010000000000000009`.

An SLO with a latency threshold states it once, as `threshold_seconds`; its queries, test series
and description say `{{.threshold}}`, replaced here: in a query or series by the histogram's
`le` label value as the exporter spells it (2 -> "2.0"), in the description by a readable
duration (0.5 -> "500 ms").

A task SLO measured per task type says `{{.task_types}}` inside its selectors. A task type
declared with `slo=TaskSlo(success=..., freshness=...)` (conveyor.tasks.registry) gets an SLO
of its own from each (`task-success` -> `task-success-<type>`, its selectors matching only that
type, its test series relabelled), and the global SLO's `{{.task_types}}` becomes a matcher
EXCLUDING every type with its own: an outage of that type pages once, on its own SLO. The
types are those the stacks deploy (each Pulumi.<stack>.yaml's task modules), so a fork declares
a type's SLO in its own package and edits no file of Conveyor's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import astuple, dataclass, fields, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from conveyor.tasks.registry import TaskSlo, TaskType, load
from conveyor_infra import stacks
from prometheus_client.utils import floatToGoString

from conveyor_observability import durations
from conveyor_observability.paths import SPEC_PATH

WINDOW_PLACEHOLDER = "{{.window}}"
THRESHOLD_PLACEHOLDER = "{{.threshold}}"
TASK_TYPES_PLACEHOLDER = "{{.task_types}}"
_TASK_TYPE_LABEL = re.compile(r'task_type="[^"]*"')
TASK_SLO_PREFIX = "task-"  # TaskSlo's `success` objective is of the spec's `task-success`
BASE_WINDOW = "5m"
BURN_SEVERITIES = ("page", "ticket")
SEVERITIES = ("page", "ticket", "warning")
_SLO_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_ALERT_NAME_RE = re.compile(r"^([A-Z][a-z0-9]*)+$")


class SpecError(ValueError):
    """The spec is malformed; the message names every problem found."""


@dataclass(frozen=True)
class BurnWindow:
    """Fire when the error ratio exceeds burn_rate x budget over both windows."""

    long_window: str
    short_window: str
    burn_rate: Decimal


@dataclass(frozen=True)
class Sli:
    errors: str
    total: str

    def errors_over(self, window: str) -> str:
        return self.errors.replace(WINDOW_PLACEHOLDER, window)

    def total_over(self, window: str) -> str:
        return self.total.replace(WINDOW_PLACEHOLDER, window)


@dataclass(frozen=True)
class TestSeries:
    """Raw series that count good events, bad events, or all events (good + bad)."""

    good: tuple[str, ...]
    bad: tuple[str, ...]
    all: tuple[str, ...]


@dataclass(frozen=True)
class Slo:
    name: str
    objective: Decimal  # percent, e.g. 99.9
    description: str
    sli: Sli
    min_events_per_hour: Decimal
    test_series: TestSeries
    # The latency a good event stays within, a bucket boundary of the SLI's histogram; None for
    # SLOs that are not about latency.
    threshold_seconds: Decimal | None = None
    # The one task type a per-type SLO measures; None for the others.
    task_type: str | None = None

    @property
    def objective_ratio(self) -> Decimal:
        return self.objective / 100

    @property
    def error_budget(self) -> Decimal:
        return (100 - self.objective) / 100


@dataclass(frozen=True)
class SymptomAlert:
    alert: str
    severity: str
    for_: str
    expr: str
    summary: str
    description: str


@dataclass(frozen=True)
class Spec:
    service: str
    runbook_base_url: str
    period: str
    burn_rate_alerts: Mapping[str, tuple[BurnWindow, ...]]
    slos: tuple[Slo, ...]
    symptom_alerts: tuple[SymptomAlert, ...]

    @property
    def alert_prefix(self) -> str:
        """ "conveyor" -> "Conveyor": every alert name starts with it."""
        return camel_case(self.service)

    def slo(self, name: str) -> Slo:
        """The SLO called `name`; KeyError when the spec has none."""
        for slo in self.slos:
            if slo.name == name:
                return slo
        raise KeyError(f"the SLO spec defines no SLO named {name!r}")

    def sloth_id(self, slo: Slo) -> str:
        return f"{self.service}-{slo.name}"

    def runbook_url(self, alert: str) -> str:
        return f"{self.runbook_base_url}/runbooks/{alert}.md"

    def windows(self) -> list[str]:
        """Every window a ratio is recorded for, shortest first."""
        names = {BASE_WINDOW, self.period}
        for policy in self.burn_rate_alerts.values():
            for pair in policy:
                names.update((pair.long_window, pair.short_window))
        return sorted(names, key=durations.seconds)


def camel_case(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_.]", name))


def load_spec(path: Path = SPEC_PATH, task_types: Iterable[TaskType] | None = None) -> Spec:
    """The spec at `path`, with the SLOs of `task_types` (default: the types the stacks
    deploy)."""
    with path.open() as fh:
        raw = yaml.safe_load(fh)
    return parse_spec(raw, deployed_task_types() if task_types is None else task_types)


def deployed_task_types() -> tuple[TaskType, ...]:
    """The task types of every module a stack deploys (importing them)."""
    modules = stacks.task_modules()
    return tuple(load(modules).values()) if modules else ()


def parse_spec(raw: Any, task_types: Iterable[TaskType] = ()) -> Spec:
    """Build a Spec from the YAML document and the task types' own SLOs, or raise SpecError
    listing every problem."""
    problems: list[str] = []
    doc = _mapping(raw, "spec", problems)
    _keys(
        doc,
        "spec",
        {"version", "service", "runbook_base_url", "period", "burn_rate_alerts", "slos"},
        {"symptom_alerts"},
        problems,
    )
    if doc.get("version") != 1:
        problems.append("spec: version must be 1")
    service = str(doc.get("service", ""))
    if not _SLO_NAME_RE.match(service):
        problems.append(f"spec: service {service!r} must be lowercase words joined by '-'")
    base_url = str(doc.get("runbook_base_url", ""))
    if not re.match(r"^https?://\S+[^/]$", base_url):
        problems.append("spec: runbook_base_url must be an http(s) URL without a trailing '/'")
    period = str(doc.get("period", ""))
    _duration(period, "spec: period", problems)

    policies = _burn_policies(doc.get("burn_rate_alerts"), problems)
    slos = tuple(
        _slo(item, f"slos[{i}]", problems)
        for i, item in enumerate(_list(doc.get("slos"), "slos", problems))
    )
    prefix = camel_case(service)
    symptoms = tuple(
        _symptom(item, f"symptom_alerts[{i}]", prefix, problems)
        for i, item in enumerate(_list(doc.get("symptom_alerts", []), "symptom_alerts", problems))
    )
    for kind, names in (("SLO", [s.name for s in slos]), ("alert", [a.alert for a in symptoms])):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            problems.append(f"spec: duplicate {kind} names: {', '.join(duplicates)}")
    if not slos:
        problems.append("spec: slos must list at least one SLO")
    slos = _with_task_type_slos(slos, task_types, problems)
    if problems:
        raise SpecError("invalid SLO spec:\n  " + "\n  ".join(problems))
    return Spec(
        service=service,
        runbook_base_url=base_url,
        period=period,
        burn_rate_alerts=policies,
        slos=slos,
        symptom_alerts=symptoms,
    )


def _matcher(slo: Slo, value: str) -> Slo:
    sli = Sli(
        errors=slo.sli.errors.replace(TASK_TYPES_PLACEHOLDER, value),
        total=slo.sli.total.replace(TASK_TYPES_PLACEHOLDER, value),
    )
    return replace(slo, sli=sli)


def _for_type(slo: Slo, task_type: str, objective: Decimal) -> Slo:
    def relabel(series: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_TASK_TYPE_LABEL.sub(f'task_type="{task_type}"', s) for s in series)

    typed = _matcher(slo, f'task_type="{task_type}"')
    return replace(
        typed,
        name=f"{slo.name}-{re.sub(r'[._]', '-', task_type)}",
        objective=objective,
        description=f"{task_type}: {slo.description}",
        test_series=TestSeries(*(relabel(s) for s in astuple(slo.test_series))),
        task_type=task_type,
    )


def _with_task_type_slos(
    slos: tuple[Slo, ...], task_types: Iterable[TaskType], problems: list[str]
) -> tuple[Slo, ...]:
    """The spec's SLOs with one per objective of a type's `slo`; each global one excludes the
    types that have their own of its kind."""
    per_type = {slo.name for slo in slos if TASK_TYPES_PLACEHOLDER in slo.sli.errors}
    typed: dict[str, list[Slo]] = {name: [] for name in per_type}
    for declared in task_types:
        for measure in fields(TaskSlo):
            objective = getattr(declared.slo, measure.name, None)
            if objective is None:
                continue
            base = f"{TASK_SLO_PREFIX}{measure.name}"
            if base not in per_type:
                problems.append(
                    f"task type {declared.type_name}: slo {measure.name} needs an SLO {base!r} "
                    f"measured per task type (one of {sorted(per_type)})"
                )
                continue
            base_slo = next(s for s in slos if s.name == base)
            typed[base].append(_for_type(base_slo, declared.type_name, Decimal(str(objective))))
    result = []
    for slo in slos:
        if slo.name not in per_type:
            result.append(slo)
            continue
        own = sorted(t.task_type for t in typed[slo.name] if t.task_type)
        excluded = "|".join(re.escape(t).replace("\\", "\\\\") for t in own)
        result.append(_matcher(slo, f'task_type!~"{excluded}"' if own else 'task_type=~".*"'))
        result += sorted(typed[slo.name], key=lambda t: t.name)
    return tuple(result)


def _burn_policies(raw: Any, problems: list[str]) -> dict[str, tuple[BurnWindow, ...]]:
    doc = _mapping(raw, "burn_rate_alerts", problems)
    _keys(doc, "burn_rate_alerts", set(BURN_SEVERITIES), set(), problems)
    policies: dict[str, tuple[BurnWindow, ...]] = {}
    for severity in BURN_SEVERITIES:
        pairs = []
        for i, item in enumerate(
            _list(doc.get(severity), f"burn_rate_alerts.{severity}", problems)
        ):
            where = f"burn_rate_alerts.{severity}[{i}]"
            pair = _mapping(item, where, problems)
            _keys(pair, where, {"long_window", "short_window", "burn_rate"}, set(), problems)
            long_window = str(pair.get("long_window", ""))
            short_window = str(pair.get("short_window", ""))
            _duration(long_window, f"{where}.long_window", problems)
            _duration(short_window, f"{where}.short_window", problems)
            for name in (long_window, short_window):
                if _is_duration(name) and durations.seconds(name) < durations.seconds(BASE_WINDOW):
                    problems.append(f"{where}: windows shorter than {BASE_WINDOW} are not recorded")
            if (
                _is_duration(long_window)
                and _is_duration(short_window)
                and durations.seconds(short_window) >= durations.seconds(long_window)
            ):
                problems.append(f"{where}: short_window must be shorter than long_window")
            burn_rate = _positive(pair.get("burn_rate"), f"{where}.burn_rate", problems)
            pairs.append(BurnWindow(long_window, short_window, burn_rate))
        if not pairs:
            problems.append(f"burn_rate_alerts.{severity}: list at least one window pair")
        policies[severity] = tuple(pairs)
    return policies


def _slo(raw: Any, where: str, problems: list[str]) -> Slo:
    doc = _mapping(raw, where, problems)
    _keys(
        doc,
        where,
        {"name", "objective", "description", "sli", "min_events_per_hour", "test_series"},
        {"threshold_seconds"},
        problems,
    )
    threshold = (
        _positive(doc["threshold_seconds"], f"{where}.threshold_seconds", problems)
        if "threshold_seconds" in doc
        else None
    )
    le = None if threshold is None else bucket_label(threshold)
    name = str(doc.get("name", ""))
    if not _SLO_NAME_RE.match(name):
        problems.append(f"{where}.name: {name!r} must be lowercase words joined by '-'")
    objective = _positive(doc.get("objective"), f"{where}.objective", problems)
    if objective >= 100:
        problems.append(f"{where}.objective: must be a percentage below 100")
    sli_doc = _mapping(doc.get("sli"), f"{where}.sli", problems)
    _keys(sli_doc, f"{where}.sli", {"errors", "total"}, set(), problems)
    raw_sli = {part: str(sli_doc.get(part, "")) for part in ("errors", "total")}
    for part, query in raw_sli.items():
        if WINDOW_PLACEHOLDER not in query:
            problems.append(f"{where}.sli.{part}: must contain {WINDOW_PLACEHOLDER}")
    uses_threshold = any(THRESHOLD_PLACEHOLDER in query for query in raw_sli.values())
    if (threshold is None) == uses_threshold:
        problems.append(
            f"{where}.sli: uses {THRESHOLD_PLACEHOLDER} but sets no threshold_seconds"
            if uses_threshold
            else f"{where}.sli: sets threshold_seconds but never uses {THRESHOLD_PLACEHOLDER}"
        )
    sli = Sli(errors=_fill(raw_sli["errors"], le), total=_fill(raw_sli["total"], le))
    series_doc = _mapping(doc.get("test_series"), f"{where}.test_series", problems)
    _keys(series_doc, f"{where}.test_series", {"good"}, {"bad", "all"}, problems)

    def series_of(kind: str, default: list[str] | None) -> tuple[str, ...]:
        raw = _list(series_doc.get(kind, default), f"{where}.test_series.{kind}", problems)
        return tuple(_fill(str(s), le) for s in raw)

    series = TestSeries(
        good=series_of("good", None), bad=series_of("bad", []), all=series_of("all", [])
    )
    if not series.good or not (series.bad or series.all):
        problems.append(f"{where}.test_series: needs good series and bad or all series")
    return Slo(
        name=name,
        objective=objective,
        description=_fill(
            str(doc.get("description", "")).strip(),
            None if threshold is None else readable_seconds(threshold),
        ),
        sli=sli,
        min_events_per_hour=_positive(
            doc.get("min_events_per_hour"), f"{where}.min_events_per_hour", problems
        ),
        test_series=series,
        threshold_seconds=threshold,
    )


def bucket_label(seconds: Decimal) -> str:
    """The `le` label value of the bucket bounded by `seconds`, spelled as prometheus_client
    exports it (30 -> "30.0"): a query naming it otherwise matches no series."""
    return floatToGoString(float(seconds))


def readable_seconds(seconds: Decimal) -> str:
    """0.5 -> "500 ms", 2 -> "2 s"."""
    if seconds < 1:
        return f"{format((seconds * 1000).normalize(), 'f')} ms"
    return f"{format(seconds.normalize(), 'f')} s"


def _fill(text: str, threshold: str | None) -> str:
    """`text` with THRESHOLD_PLACEHOLDER replaced by `threshold` (left alone without one: a
    stray placeholder is reported for the SLI)."""
    return text if threshold is None else text.replace(THRESHOLD_PLACEHOLDER, threshold)


def _symptom(raw: Any, where: str, prefix: str, problems: list[str]) -> SymptomAlert:
    doc = _mapping(raw, where, problems)
    _keys(
        doc, where, {"alert", "severity", "for", "expr", "summary", "description"}, set(), problems
    )
    alert = str(doc.get("alert", ""))
    if not (_ALERT_NAME_RE.match(alert) and alert.startswith(prefix)):
        problems.append(f"{where}.alert: {alert!r} must be CamelCase starting with {prefix}")
    severity = str(doc.get("severity", ""))
    if severity not in SEVERITIES:
        problems.append(f"{where}.severity: {severity!r} is not one of {', '.join(SEVERITIES)}")
    for_ = str(doc.get("for", ""))
    _duration(for_, f"{where}.for", problems)
    return SymptomAlert(
        alert=alert,
        severity=severity,
        for_=for_,
        expr=str(doc.get("expr", "")).strip(),
        summary=str(doc.get("summary", "")).strip(),
        description=str(doc.get("description", "")).strip(),
    )


def _mapping(raw: Any, where: str, problems: list[str]) -> Mapping[str, Any]:
    if isinstance(raw, Mapping):
        return raw
    problems.append(f"{where}: expected a mapping")
    return {}


def _list(raw: Any, where: str, problems: list[str]) -> list[Any]:
    if isinstance(raw, list):
        return raw
    problems.append(f"{where}: expected a list")
    return []


def _keys(
    doc: Mapping[str, Any], where: str, required: set[str], optional: set[str], problems: list[str]
) -> None:
    missing = required - doc.keys()
    unknown = doc.keys() - required - optional
    if missing:
        problems.append(f"{where}: missing {', '.join(sorted(missing))}")
    if unknown:
        problems.append(f"{where}: unknown {', '.join(sorted(unknown))}")


def _is_duration(value: str) -> bool:
    try:
        durations.seconds(value)
    except ValueError:
        return False
    return True


def _duration(value: str, where: str, problems: list[str]) -> None:
    if not _is_duration(value):
        problems.append(f"{where}: {value!r} is not a duration like 5m, 6h or 30d")


def _positive(raw: Any, where: str, problems: list[str]) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        problems.append(f"{where}: expected a number")
        return Decimal(1)
    value = Decimal(str(raw))
    if value <= 0:
        problems.append(f"{where}: must be above 0")
        return Decimal(1)
    return value
