"""Metric names referenced by PromQL expressions, and Grafana queries turned into PromQL.

No PromQL parser exists for Python, so a small lexer does the job: an identifier outside label
matchers, ranges and grouping label lists that is neither a keyword nor a function call is a
metric name. Whether the expression parses at all is promtool's call (see promtool.py).
"""

from __future__ import annotations

import re

_TOKEN_RE = re.compile(
    r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    |(?P<comment>\#[^\n]*)
    |(?P<duration>(?:[0-9]+(?:ms|[smhdwy]))+)
    |(?P<number>0x[0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
    |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<punct>=~|!~|!=|==|<=|>=|[{}()\[\],=<>+\-*/%^@:])
    |(?P<space>\s+)
    """,
    re.VERBOSE,
)
AGGREGATIONS = frozenset(
    {
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
        "bottomk", "topk", "quantile", "limitk", "limit_ratio",
    }
)  # fmt: skip
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = LABEL_LIST_KEYWORDS | {"bool", "and", "or", "unless", "offset", "atan2", "inf", "nan"}
_CLOSING = {"(": ")", "[": "]", "{": "}"}

# Grafana's interval variables, replaced by a typical value so the query can be checked.
GRAFANA_INTERVALS = ("$__rate_interval", "$__interval", "$__range")


def grafana_to_promql(expr: str, interval: str = "5m") -> str:
    for variable in GRAFANA_INTERVALS:
        expr = expr.replace(variable, interval)
    return expr


def _tokens(expr: str) -> list[tuple[str, str]]:
    tokens = []
    position = 0
    while position < len(expr):
        match = _TOKEN_RE.match(expr, position)
        if match is None:
            raise ValueError(f"cannot read PromQL at {expr[position : position + 20]!r}")
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            tokens.append((kind, match.group()))
        position = match.end()
    return tokens


def _skip_group(tokens: list[tuple[str, str]], start: int) -> int:
    """Index just past the bracket group opening at `start`."""
    opening = tokens[start][1]
    depth = 0
    for index in range(start, len(tokens)):
        text = tokens[index][1]
        if text == opening:
            depth += 1
        elif text == _CLOSING[opening]:
            depth -= 1
            if depth == 0:
                return index + 1
    raise ValueError(f"unbalanced {opening!r} in PromQL")


def metric_names(expr: str) -> set[str]:
    """Names of the series `expr` selects, e.g. {"up"} for `sum by (job) (up == 0)`."""
    tokens = _tokens(expr)
    names: set[str] = set()
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1][1] if index + 1 < len(tokens) else ""
        if text in ("{", "["):
            index = _skip_group(tokens, index)  # label matchers, ranges, subqueries
            continue
        if kind == "ident":
            lowered = text.lower()
            if lowered in LABEL_LIST_KEYWORDS and following == "(":
                index = _skip_group(tokens, index + 1)
                continue
            is_call = following == "(" or (
                lowered in AGGREGATIONS and following in ("by", "without")
            )
            if lowered not in KEYWORDS and not is_call:
                names.add(text)
        index += 1
    return names
