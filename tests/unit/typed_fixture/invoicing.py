"""A fork's task module, as the registry tests load it."""

from __future__ import annotations

from conveyor.tasks.registry import Backoff, task
from pydantic import BaseModel, Field, ValidationError


class InvoiceRender(BaseModel):
    customer_id: str
    amount_cents: int
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class RenderResult(BaseModel):
    url: str


@task(
    "invoice.render",
    payload=InvoiceRender,
    max_attempts=8,
    timeout="30s",
    backoff=Backoff(base="1s", cap="5m"),
    permanent=(ValidationError,),
    concurrency=2,
)
def render(ctx: object, invoice: InvoiceRender) -> RenderResult:
    return RenderResult(url=f"https://invoices.example/{invoice.customer_id}")
