"""``inferq tenants``: each tenant's share of the engines (fair share, weights) and the
limits its keys share."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from inferq.cli.common import database_command, out, with_store
from inferq.cli.limits import Rpm, Tpm, limits_text, set_tenant_limits
from inferq.config import Settings

tenants_app = typer.Typer(
    help="Tenants: their shares of the engines (weights) and shared limits.", no_args_is_help=True
)

Tenant = Annotated[str, typer.Argument(help="The tenant (as its keys name it).")]


@database_command(tenants_app, "weight")
def tenants_weight(
    config: Settings,
    tenant: Tenant,
    weight: Annotated[float, typer.Argument(help="Its share against other waiting tenants.")],
) -> None:
    """Set a tenant's weight (default 1): tenants with waiting work share each service
    class in proportion to their weights, in tokens processed."""
    share = with_store(config, lambda store: store.set_tenant_weight(tenant, weight))
    out.print(f"tenant {share.tenant}: weight {share.weight:g}")


@database_command(tenants_app, "list")
def tenants_list(config: Settings) -> None:
    """List the tenants that have a weight or have been charged for work."""
    shares = with_store(config, lambda store: store.list_tenants())
    table = Table("tenant", "weight", "virtual time", "tokens per job")
    for share in shares:
        table.add_row(
            share.tenant, f"{share.weight:g}", f"{share.vtime:.0f}", f"{share.avg_cost:.0f}"
        )
    out.print(table)


@database_command(tenants_app, "limit")
def tenants_limit(config: Settings, tenant: Tenant, rpm: Rpm = None, tpm: Tpm = None) -> None:
    """Set the requests and tokens per minute that all the tenant's keys share (0 removes
    one; an option left out keeps its value), besides each key's own."""
    limits = with_store(config, lambda store: set_tenant_limits(store, tenant, rpm, tpm))
    out.print(f"tenant {tenant}: {limits_text(limits)}")
