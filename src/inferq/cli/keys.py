"""``inferq keys``: create, list and revoke API keys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from inferq.cli.common import database_command, err, out, timestamp, with_store
from inferq.cli.limits import Rpm, Tpm, limits_text, set_key_limits
from inferq.config import Settings
from inferq.core.errors import Conflict
from inferq.core.keys import KeyService, TenantExists
from inferq.core.limits import Limits
from inferq.core.models import ApiKey
from inferq.store.base import JobStore

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

KeyRef = Annotated[str, typer.Argument(help="The key's id or name.")]


@database_command(keys_app, "create")
def keys_create(
    config: Settings,
    name: Annotated[str, typer.Option(help="A name for the key (unique).")],
    tenant: Annotated[
        str | None,
        typer.Option(
            help="The tenant whose jobs the key reads and writes; pass it to join an existing "
            "tenant. Without it the key gets a new tenant named like the key, and the command "
            "fails when a tenant of that name already exists."
        ),
    ] = None,
    rpm: Rpm = None,
    tpm: Tpm = None,
) -> None:
    """Create a key and print it alone on stdout (it is not shown again)."""

    async def create(store: JobStore) -> tuple[ApiKey, str]:
        try:
            return await KeyService(store).create(name=name, tenant=tenant, limits=Limits(rpm, tpm))
        except TenantExists as exc:
            raise Conflict(
                f"the tenant {exc.tenant!r} already exists, and a key without --tenant gets "
                f"a new tenant named like the key. Pass --tenant {exc.tenant} to join that "
                "tenant (and read its jobs), or pick another --name."
            ) from exc

    key, secret = with_store(config, create)
    err.print(f"created key {key.id} ({key.name}) for tenant {key.tenant}")
    print(secret)


@database_command(keys_app, "list")
def keys_list(config: Settings) -> None:
    """List keys (their secrets are never stored)."""
    keys = with_store(config, lambda store: KeyService(store).list())
    table = Table("id", "name", "tenant", "admin", "prefix", "rpm", "tpm", "created", "revoked")
    for key in keys:
        table.add_row(
            key.id,
            key.name,
            key.tenant,
            "yes" if key.admin else "",
            key.prefix + "…",
            str(key.rpm or ""),
            str(key.tpm or ""),
            timestamp(key.created_at),
            timestamp(key.revoked_at),
        )
    out.print(table)


@database_command(keys_app, "revoke")
def keys_revoke(config: Settings, key: KeyRef) -> None:
    """Revoke a key; requests with it get 401 within seconds."""
    revoked = with_store(config, lambda store: KeyService(store).revoke(key))
    out.print(f"revoked {revoked.id} ({revoked.name})")


@database_command(keys_app, "limit")
def keys_limit(config: Settings, key: KeyRef, rpm: Rpm = None, tpm: Tpm = None) -> None:
    """Set a key's requests and tokens per minute (0 removes one; an option left out
    keeps its value). A key without its own limit has the server's default
    (INFERQ_DEFAULT_RPM, INFERQ_DEFAULT_TPM). Live within seconds on every server."""
    changed = with_store(config, lambda store: set_key_limits(store, key, rpm, tpm))
    out.print(f"{changed.name}: {limits_text(Limits(changed.rpm, changed.tpm))}")
