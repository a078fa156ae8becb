"""`python -m conveyor.healthcheck`: exit 0 if the API's loopback health endpoint is SERVING.

Used as the ECS container health check (no curl or grpc_health_probe in the image needed).
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    address = os.environ.get("CONVEYOR_HEALTH_LISTEN", "127.0.0.1:50052")
    try:
        with grpc.insecure_channel(address) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
    except grpc.RpcError as exc:
        print(f"unhealthy: {exc.code().name}", file=sys.stderr)
        return 1
    serving = response.status == health_pb2.HealthCheckResponse.SERVING
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
