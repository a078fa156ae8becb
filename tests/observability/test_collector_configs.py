"""OpenTelemetry collector configs: every pipeline is wired to defined components, processors
are in a safe order, and the deployment-specific parts are where the services expect them."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from conveyor_observability.paths import COLLECTOR_DIR

CONFIGS = ("ecs-sidecar.yaml", "gateway.yaml", "local.yaml")
KINDS = ("receivers", "processors", "exporters")


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((COLLECTOR_DIR / name).read_text())


def _type(component_id: str) -> str:
    """ "otlp/gateway" -> "otlp": the part before the slash is the component type."""
    return component_id.split("/", 1)[0]


def _pipelines(config: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    return config["service"]["pipelines"]


def test_the_three_configs_exist() -> None:
    assert sorted(path.name for path in COLLECTOR_DIR.glob("*.yaml")) == sorted(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_pipelines_use_defined_components_and_every_defined_one_is_used(name: str) -> None:
    config = _load(name)
    for kind in KINDS:
        defined = set(config.get(kind) or {})
        used = {c for pipeline in _pipelines(config).values() for c in pipeline.get(kind, [])}
        assert used <= defined, f"{name}: {kind} used but not defined: {sorted(used - defined)}"
        assert defined <= used, f"{name}: {kind} defined but unused: {sorted(defined - used)}"


@pytest.mark.parametrize("name", CONFIGS)
def test_every_pipeline_has_receivers_and_exporters(name: str) -> None:
    for pipeline_name, pipeline in _pipelines(_load(name)).items():
        assert pipeline.get("receivers"), f"{name}: {pipeline_name} receives nothing"
        assert pipeline.get("exporters"), f"{name}: {pipeline_name} exports nothing"


@pytest.mark.parametrize("name", CONFIGS)
def test_memory_limiter_comes_first_and_batch_last(name: str) -> None:
    for pipeline_name, pipeline in _pipelines(_load(name)).items():
        processors = [_type(p) for p in pipeline["processors"]]
        assert processors[0] == "memory_limiter", f"{name}: {pipeline_name}: {processors}"
        assert processors[-1] == "batch", f"{name}: {pipeline_name}: {processors}"


@pytest.mark.parametrize("name", CONFIGS)
def test_enabled_extensions_are_defined_and_defined_ones_enabled(name: str) -> None:
    config = _load(name)
    defined = set(config.get("extensions") or {})
    enabled = set(config["service"].get("extensions", []))
    assert enabled == defined


def test_gateway_samples_at_the_tail_before_batching() -> None:
    config = _load("gateway.yaml")
    processors = [_type(p) for p in _pipelines(config)["traces"]["processors"]]
    assert processors.index("tail_sampling") < processors.index("batch")
    policies = {p["type"]: p for p in config["processors"]["tail_sampling"]["policies"]}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    assert policies["latency"]["latency"]["threshold_ms"] == 1000
    assert 0 < policies["probabilistic"]["probabilistic"]["sampling_percentage"] < 100
    assert {_type(e) for e in _pipelines(config)["traces"]["exporters"]} == {"awsxray"}


def test_sidecar_scrapes_its_own_service_as_the_job_the_alerts_select() -> None:
    config = _load("ecs-sidecar.yaml")
    (scrape,) = config["receivers"]["prometheus"]["config"]["scrape_configs"]
    # conveyor-api | conveyor-relay | conveyor-worker, set per task by the Pulumi program.
    assert scrape["job_name"] == "${env:CONVEYOR_SERVICE_NAME}"
    assert scrape["static_configs"] == [{"targets": ["${env:CONVEYOR_METRICS_TARGET}"]}]


def test_sidecar_writes_metrics_to_managed_prometheus_with_sigv4() -> None:
    config = _load("ecs-sidecar.yaml")
    exporter = config["exporters"]["prometheusremotewrite"]
    assert exporter["endpoint"] == "${env:AMP_REMOTE_WRITE_ENDPOINT}"
    assert exporter["auth"]["authenticator"] == "sigv4auth"
    assert config["extensions"]["sigv4auth"]["service"] == "aps"
    assert exporter["add_metric_suffixes"] is False  # names stay as the metrics contract has them
    assert _pipelines(config)["metrics"]["exporters"] == ["prometheusremotewrite"]


def test_sidecar_detects_ecs_resources_and_makes_each_task_its_own_instance() -> None:
    config = _load("ecs-sidecar.yaml")
    assert set(config["processors"]["resourcedetection"]["detectors"]) >= {"ecs", "env"}
    (action,) = config["processors"]["resource/instance"]["attributes"]
    assert action == {
        "key": "service.instance.id",
        "from_attribute": "aws.ecs.task.arn",
        "action": "upsert",
    }
    assert "resource/instance" in _pipelines(config)["metrics"]["processors"]


def test_sidecar_forwards_traces_to_the_gateway_and_reports_health() -> None:
    config = _load("ecs-sidecar.yaml")
    assert _pipelines(config)["traces"]["exporters"] == ["otlp/gateway"]
    assert config["exporters"]["otlp/gateway"]["endpoint"] == "${env:OTEL_GATEWAY_ENDPOINT}"
    assert "health_check" in config["service"]["extensions"]


def test_local_prints_everything_and_exposes_metrics_for_prometheus() -> None:
    config = _load("local.yaml")
    assert {_type(r) for p in _pipelines(config).values() for r in p["receivers"]} == {"otlp"}
    assert _pipelines(config)["metrics"]["exporters"] == ["debug", "prometheus"]
    assert _pipelines(config)["traces"]["exporters"] == ["debug"]
