"""Does the asyncio gRPC server pay? The server model's own CPU per RPC, sync against asyncio.

The API runs grpcio's threaded server (a ThreadPoolExecutor, a thread per RPC in flight).
grpcio's asyncio server (`grpc.aio`) runs handlers on one event loop instead. Its saving can
only come out of what the server model itself costs per RPC, so that is what this measures:
each model serves SubmitTask with the API's messages over mTLS on loopback and a handler that
does no work (parse the request, answer a fixed task), loaded by CLIENTS threads in this process,
and the server process's CPU (user + system, from /proc) is divided by the RPCs it answered.
Models alternate over `--sequences` (the machine is noisy; compare within a sequence).

The API's whole CPU per task (`make bench`'s throughput phase, API process) holds this cost
once; the rest is its handler's work (validation, the DynamoDB transaction through botocore,
logging, tracing), which the asyncio server would still run on threads, botocore being
synchronous. So the asyncio server can save at most the difference measured here.

    python -m benchmarks.server_model [--rpcs 4000] [--sequences 3]

Prints a table and writes benchmarks/results/server-model-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from conveyor.api.auth import channel_credentials, server_credentials
from conveyor.settings import TlsSettings
from conveyor.v1 import task_service_pb2 as pb
from conveyor_dev.local.certs import DeploymentCerts, generate_deployment
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).with_name("results")
METHOD = "/conveyor.v1.TaskService/SubmitTask"
MODELS = ("sync", "aio")
CLIENTS = 8
POOL_THREADS = 16  # the API's CONVEYOR_API_MAX_WORKERS default
WARMUP_RPCS = 300
TENANT = "bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# /proc counts CPU in whole ticks (10 ms at 100 Hz) and a server spends ~0.2 ms an RPC: with
# fewer RPCs than this a load's CPU is a tick or two, or none (40 RPCs read 0 in a CI run).
MIN_RPCS = 500


def _answer(request: pb.SubmitTaskRequest) -> pb.SubmitTaskResponse:
    return pb.SubmitTaskResponse(
        task=pb.Task(task_id="0" * 32, task_type=request.task_type), created=True
    )


def _handlers(handler: Any) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "conveyor.v1.TaskService",
        {
            "SubmitTask": grpc.unary_unary_rpc_method_handler(
                handler,
                request_deserializer=pb.SubmitTaskRequest.FromString,
                response_serializer=pb.SubmitTaskResponse.SerializeToString,
            )
        },
    )


def _serve_sync(credentials: grpc.ServerCredentials, port_file: Path) -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(POOL_THREADS), maximum_concurrent_rpcs=POOL_THREADS * 4
    )
    server.add_generic_rpc_handlers((_handlers(lambda request, context: _answer(request)),))
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    port_file.write_text(str(port))
    server.wait_for_termination()


async def _serve_aio(credentials: grpc.ServerCredentials, port_file: Path) -> None:
    async def submit(request: pb.SubmitTaskRequest, context: Any) -> pb.SubmitTaskResponse:
        return _answer(request)

    server = grpc.aio.server(maximum_concurrent_rpcs=POOL_THREADS * 4)
    server.add_generic_rpc_handlers((_handlers(submit),))
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    port_file.write_text(str(port))
    await server.wait_for_termination()


def serve(model: str, port_file: Path) -> None:
    """The server process: one model, until SIGTERM; its certificates from CONVEYOR_TLS_*."""
    credentials = server_credentials(TlsSettings())
    if model == "sync":
        _serve_sync(credentials, port_file)
    else:
        asyncio.run(_serve_aio(credentials, port_file))


def port_of(server: subprocess.Popen[bytes], port_file: Path, timeout: float = 30) -> str:
    """The port `server` wrote to `port_file`; raises if it exits or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while not (port_file.exists() and port_file.read_text()):
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server wrote no port in {timeout} s")
        time.sleep(0.1)
    return port_file.read_text()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def load(stub: Any, rpcs: int) -> float:
    """`rpcs` SubmitTask calls from CLIENTS threads; returns the wall seconds they took."""
    request = pb.SubmitTaskRequest(task_type="demo.noop", payload=b"{}", idempotency_key="k")
    per_client = [rpcs // CLIENTS + (1 if i < rpcs % CLIENTS else 0) for i in range(CLIENTS)]
    start = threading.Barrier(CLIENTS + 1)

    def client(n: int) -> None:
        start.wait()
        for _ in range(n):
            stub(request, timeout=10)

    threads = [threading.Thread(target=client, args=(n,)) for n in per_client]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began


def measure(model: str, rpcs: int, certs: DeploymentCerts) -> dict[str, float]:
    """Start a `model` server, warm it up, load it; its CPU per RPC and the RPCs per second."""
    port_file = certs.directory / f"port-{model}"
    port_file.unlink(missing_ok=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.server_model", "serve", model, str(port_file)],
        env={**os.environ, **certs.server.env()},
    )
    try:
        channel = grpc.secure_channel(
            f"localhost:{port_of(server, port_file)}",
            channel_credentials(certs.clients[TENANT].settings()),
        )
        stub = channel.unary_unary(
            METHOD,
            request_serializer=pb.SubmitTaskRequest.SerializeToString,
            response_deserializer=pb.SubmitTaskResponse.FromString,
        )
        load(stub, WARMUP_RPCS)
        cpu_before = cpu_seconds(server.pid)
        wall = load(stub, rpcs)
        cpu = cpu_seconds(server.pid) - cpu_before
        channel.close()
        return {"rpcs_per_second": rpcs / wall, "server_cpu_us_per_rpc": cpu / rpcs * 1e6}
    finally:
        server.terminate()
        server.wait(10)


def table(runs: list[dict[str, Any]]) -> Table:
    out = Table(title="gRPC server model: a no-op SubmitTask over mTLS, 8 client threads")
    out.add_column("model")
    out.add_column("RPC/s min/med/max", justify="right")
    out.add_column("server CPU µs/RPC min/med/max", justify="right")
    out.add_column("CPU vs sync (per sequence)", justify="right")
    for model in MODELS:
        mine = [r[model] for r in runs]
        rate = sorted(m["rpcs_per_second"] for m in mine)
        cpu = sorted(m["server_cpu_us_per_rpc"] for m in mine)
        ratios = [
            r[model]["server_cpu_us_per_rpc"] / r["sync"]["server_cpu_us_per_rpc"] for r in runs
        ]
        out.add_row(
            model,
            f"{rate[0]:.0f}/{statistics.median(rate):.0f}/{rate[-1]:.0f}",
            f"{cpu[0]:.0f}/{statistics.median(cpu):.0f}/{cpu[-1]:.0f}",
            "/".join(f"{x:.2f}" for x in ratios),
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "serve":
        serve(args[1], Path(args[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--rpcs", type=int, default=4000, help="measured RPCs per model and sequence"
    )
    parser.add_argument("--sequences", type=int, default=3)
    options = parser.parse_args(args)
    if options.rpcs < MIN_RPCS or options.sequences < 1:
        parser.error(f"--rpcs must be at least {MIN_RPCS}, --sequences at least 1")
    console = Console()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="server-model-") as tmp:
        certs = generate_deployment(Path(tmp), [TENANT])
        for sequence in range(options.sequences):
            run: dict[str, Any] = {}
            for model in MODELS if sequence % 2 == 0 else reversed(MODELS):
                run[model] = measure(model, options.rpcs, certs)
                console.print(
                    f"sequence {sequence + 1}/{options.sequences} {model}: "
                    f"{run[model]['rpcs_per_second']:.0f} RPC/s, "
                    f"{run[model]['server_cpu_us_per_rpc']:.0f} µs CPU/RPC"
                )
            runs.append(run)
    console.print(table(runs))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"server-model-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "rpcs": options.rpcs, "runs": runs}
    out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
