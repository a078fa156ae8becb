"""The Conveyor Python client, blocking (`Client`) and asyncio (`AsyncClient`).

    from conveyor.client import Client

    with Client.from_env() as conveyor:  # CONVEYOR_API_ADDRESS and CONVEYOR_TLS_*, as the CLI
        submitted = conveyor.submit(InvoiceRender(customer_id="c-1", amount_cents=1250,
                                                  currency="EUR"), idempotency_key="inv-1")
        done = conveyor.wait(submitted.task.task_id, timeout=60)

A failed call raises ConveyorError (its gRPC code, details, field violations, retry-after).
UNAVAILABLE and RESOURCE_EXHAUSTED are retried within the call's deadline (conveyor.client.retry).
"""

from conveyor.client.aio import AsyncClient
from conveyor.client.errors import ConveyorError, FieldViolation
from conveyor.client.requests import Submitted, is_terminal
from conveyor.client.retry import RetryPolicy
from conveyor.client.settings import ClientSettings
from conveyor.client.sync import Client

__all__ = [
    "AsyncClient",
    "Client",
    "ClientSettings",
    "ConveyorError",
    "FieldViolation",
    "RetryPolicy",
    "Submitted",
    "is_terminal",
]
