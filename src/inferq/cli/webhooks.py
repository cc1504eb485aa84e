"""``inferq webhooks``: tenants' webhook endpoints and their delivery history."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Column, Table

from inferq.cli.common import database_command, err, out, timestamp, with_store
from inferq.config import Settings
from inferq.core.webhooks import WebhookService

webhooks_app = typer.Typer(
    help="Register, list and delete webhook endpoints; show their deliveries.",
    no_args_is_help=True,
)

EndpointId = Annotated[str, typer.Argument(help="The endpoint's id (we_…).")]


@database_command(webhooks_app, "create")
def webhooks_create(
    config: Settings,
    tenant: Annotated[str, typer.Option(help="The tenant whose events the endpoint gets.")],
    url: Annotated[str, typer.Option(help="Where events are POSTed (http:// or https://).")],
    events: Annotated[
        str,
        typer.Option(
            help="Comma-separated event types (batch.completed, job.succeeded, …); "
            "empty: every event."
        ),
    ] = "",
) -> None:
    """Register an endpoint; its signing secret (whsec_…) is the last line of stdout, and
    is not shown again."""
    wanted = [e.strip() for e in events.split(",") if e.strip()]
    endpoint = with_store(
        config,
        lambda store: WebhookService(store=store).create(tenant=tenant, url=url, events=wanted),
    )
    err.print(f"created webhook endpoint {endpoint.id} for tenant {tenant}: {url}")
    print(endpoint.id)
    print(endpoint.secret)


@database_command(webhooks_app, "list")
def webhooks_list(
    config: Settings,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's endpoints.")] = None,
) -> None:
    """List endpoints (their secrets are not shown)."""
    found = with_store(config, lambda store: WebhookService(store=store).endpoints(tenant=tenant))
    table = Table(Column("id", no_wrap=True, min_width=35), "tenant", "url", "events", "created")
    for e in found:
        table.add_row(e.id, e.tenant, e.url, ",".join(e.events) or "(all)", timestamp(e.created_at))
    out.print(table)


@database_command(webhooks_app, "delete")
def webhooks_delete(config: Settings, endpoint_id: EndpointId) -> None:
    """Delete an endpoint and its pending deliveries."""
    with_store(config, lambda store: WebhookService(store=store).delete(endpoint_id, tenant=None))
    out.print(f"deleted {endpoint_id}")


@database_command(webhooks_app, "deliveries")
def webhooks_deliveries(
    config: Settings,
    endpoint_id: EndpointId,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
) -> None:
    """An endpoint's delivery history, newest event first."""
    found = with_store(
        config,
        lambda store: WebhookService(store=store).deliveries(endpoint_id, tenant=None, limit=limit),
    )
    # the ids whole (an operator greps for them), the rest wraps
    table = Table(
        Column("webhook-id", no_wrap=True, min_width=35),
        Column("event", no_wrap=True, min_width=28),
        "type",
        Column("subject", no_wrap=True),
        "state",
        "attempts",
        "last",
        "error",
    )
    for d in found:
        last = f"{d.last_status or '-'} at {timestamp(d.last_at)}" if d.last_at else ""
        table.add_row(
            d.id, d.event_id, d.event_type, d.subject_id, d.state, str(d.attempts), last,
            d.last_error or "",
        )  # fmt: skip
    out.print(table)
