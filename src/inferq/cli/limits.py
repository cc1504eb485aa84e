"""The ``--rpm`` and ``--tpm`` options of ``inferq keys`` and ``inferq tenants``."""

from __future__ import annotations

from typing import Annotated

import typer

from inferq.core.errors import NotFound
from inferq.core.limits import Limits, check_limit
from inferq.core.models import ApiKey
from inferq.store.base import JobStore

Rpm = Annotated[int | None, typer.Option(help="Requests per minute (0: no limit).")]
Tpm = Annotated[int | None, typer.Option(help="Tokens per minute (0: no limit).")]


def changed(old: Limits, rpm: int | None, tpm: int | None) -> Limits:
    """``old`` with the options given (0 clears one; None keeps it)."""
    return Limits(
        check_limit(rpm, "rpm") if rpm is not None else old.rpm,
        check_limit(tpm, "tpm") if tpm is not None else old.tpm,
    )


def limits_text(limits: Limits) -> str:
    rpm = f"{limits.rpm} requests" if limits.rpm else "no request limit"
    tpm = f"{limits.tpm} tokens" if limits.tpm else "no token limit"
    return f"{rpm}, {tpm} per minute"


async def set_key_limits(store: JobStore, key: str, rpm: int | None, tpm: int | None) -> ApiKey:
    found = [k for k in await store.list_keys() if key in (k.id, k.name)]
    if not found:
        raise NotFound(f"no key has the id or name {key!r}")
    new = changed(Limits(found[0].rpm, found[0].tpm), rpm, tpm)
    updated = await store.set_key_limits(found[0].id, new)
    if updated is None:
        raise NotFound(f"no key has the id or name {key!r}")
    return updated


async def set_tenant_limits(
    store: JobStore, tenant: str, rpm: int | None, tpm: int | None
) -> Limits:
    new = changed(await store.tenant_limits(tenant), rpm, tpm)
    await store.set_tenant_limits(tenant, new)
    return new
