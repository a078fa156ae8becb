"""Conveyor: a reliable queue-backed task service (gRPC API, outbox relay, SQS workers)."""

import os

# gRPC's C core logs in its own (non-JSON) format; below ERROR it reports every refused TLS
# handshake. Set before grpc is first imported so that every log line stays one JSON object.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
