"""The peer phase's summary (benchmarks/peer_systems.py): ratios per sequence, requests by
operation whoever the caller, CPU left unknown where it is not separable."""

import pytest

from benchmarks.peer_systems import Run, by_operation, summarize


def _run(tasks: int, seconds: float, cpu: float | None = None, **ops: float) -> Run:
    return Run(tasks, seconds, dict(ops), cpu, [float(ms) for ms in range(1, tasks + 1)])


def test_each_ratio_is_to_the_floor_of_its_own_sequence() -> None:
    runs = {
        "floor": [_run(100, 1.0), _run(100, 2.0), _run(100, 4.0)],  # 100, 50, 25 tasks/s
        "peer": [_run(100, 2.0), _run(100, 2.0), _run(100, 2.0)],  # 50 each
    }
    peer = summarize(runs)["peer"]
    assert peer["ratio_to_floor"] == [0.5, 1.0, 2.0]
    assert peer["tasks_per_second"] | {"by_sequence": None} == {
        "min": 50.0,
        "median": 50.0,
        "max": 50.0,
        "by_sequence": None,
    }


def test_requests_and_cpu_are_per_task_over_all_sequences() -> None:
    runs = {
        "floor": [_run(100, 1.0, None, SendMessage=100), _run(100, 1.0, None, SendMessage=100)],
        "peer": [
            _run(100, 1.0, 0.5, SendMessage=100, ReceiveMessage=10),
            _run(100, 1.0, 1.5, SendMessage=100, ReceiveMessage=30),
        ],
    }
    out = summarize(runs)
    assert out["peer"]["requests_per_task_by_operation"] == {
        "ReceiveMessage": 0.2,
        "SendMessage": 1.0,
    }
    assert out["peer"]["requests_per_task"] == pytest.approx(1.2)
    assert out["peer"]["cpu_ms_per_task"] == pytest.approx(10.0)
    assert out["floor"]["cpu_ms_per_task"] is None
    assert out["peer"]["end_to_end_ms"]["p50"] == pytest.approx(50.5)


def test_proxy_counts_are_by_operation_whoever_called() -> None:
    before = {"worker-0 ReceiveMessage": 2.0, "api TransactWriteItems": 5.0}
    after = {
        "worker-0 ReceiveMessage": 5.0,
        "worker-1 ReceiveMessage": 1.0,
        "api TransactWriteItems": 5.0,
        "SendMessage": 7.0,
    }
    assert by_operation(after, before) == {"ReceiveMessage": 4.0, "SendMessage": 7.0}
