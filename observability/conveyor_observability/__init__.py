"""Conveyor's observability as code: SLO spec, generated Prometheus rules, promtool tests and
Grafana dashboards, plus the inventories the consistency tests check them with.

`python -m conveyor_observability.generate` writes every generated artefact;
`--check` fails naming each stale one.
"""
