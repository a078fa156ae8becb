"""`python -m benchmarks.server_model` (the asyncio server's question, issue 18) runs both
server models over mTLS, measures each, and records what it printed."""

import json
from pathlib import Path

import pytest

from benchmarks import server_model


def test_both_models_serve_and_are_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_model, "RESULTS", tmp_path)
    monkeypatch.setattr(server_model, "WARMUP_RPCS", 8)
    rpcs = server_model.MIN_RPCS  # fewer read 0 ticks of CPU now and then (MIN_RPCS)
    assert server_model.main(["--rpcs", str(rpcs), "--sequences", "1"]) == 0
    (written,) = tmp_path.glob("server-model-*.json")
    (run,) = json.loads(written.read_text())["runs"]
    assert set(run) == set(server_model.MODELS)
    for model in server_model.MODELS:
        assert run[model]["rpcs_per_second"] > 0
        assert run[model]["server_cpu_us_per_rpc"] > 0, f"{model}: the server's CPU was not read"


def test_bad_arguments_are_refused_before_any_server_starts() -> None:
    with pytest.raises(SystemExit) as refused:
        server_model.main(["--rpcs", "1"])
    assert refused.value.code == 2
