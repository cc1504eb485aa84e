"""API keys and tenants.

A key is shown once, when it is created; the store keeps only its SHA-256 (keys
are 256 random bits, so a fast hash is enough). Every job belongs to the tenant
of the key that created it.

A key's tenant defaults to its name, and that default only ever makes a new
tenant: when a tenant of that name already exists (it has keys, jobs or
batches), ``create`` refuses with :class:`TenantExists`, so joining a tenant and
reading its jobs is always asked for by naming it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from inferq.core.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound
from inferq.core.limits import Limits, check_limit
from inferq.core.lookups import TimedLookups
from inferq.core.models import ApiKey, JobFilter
from inferq.core.ports import BatchFilter, KeyStore

KEY_PREFIX = "iq-"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class TenantExists(Conflict):
    """A key without a tenant would have joined the existing tenant of its name."""

    def __init__(self, tenant: str) -> None:
        super().__init__(
            f"the tenant {tenant!r} (a key's default tenant is its name) already exists; "
            "name the tenant explicitly to join it, or pick another name"
        )
        self.tenant = tenant


@dataclass(eq=False)
class KeyService:
    """Creating, checking and revoking API keys."""

    store: KeyStore
    #: how long a looked-up key is trusted (a revocation takes this long to bite)
    cache_seconds: float = 2.0
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._lookups: TimedLookups[ApiKey] = TimedLookups(self.cache_seconds, clock=self.clock)

    async def create(
        self,
        *,
        name: str,
        tenant: str | None = None,
        admin: bool = False,
        limits: Limits = Limits(),
    ) -> tuple[ApiKey, str]:
        """Create a key; return it with its secret (which is not stored).

        ``tenant=None`` makes a new tenant named like the key, and raises
        :class:`TenantExists` when that tenant already exists: joining one must be
        explicit (``tenant=...``).
        """
        name = name.strip()
        if not name:
            raise InvalidRequest("a key needs a non-empty name", param="name")
        if tenant is not None:
            tenant = tenant.strip()
            if not tenant:
                raise InvalidRequest("a tenant needs a non-empty name", param="tenant")
        elif await self.tenant_exists(name):
            raise TenantExists(name)
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(
            id="key_" + uuid.uuid4().hex[:16],
            name=name,
            tenant=tenant or name,
            prefix=secret[: len(KEY_PREFIX) + 6],
            created_at=self.clock(),
            admin=admin,
            rpm=check_limit(limits.rpm, "rpm"),
            tpm=check_limit(limits.tpm, "tpm"),
        )
        await self.store.insert_key(key, key_hash=hash_key(secret))
        return key, secret

    async def authenticate(self, secret: str | None) -> ApiKey:
        """The live key for ``secret``; AuthenticationFailed otherwise."""
        if not secret:
            raise AuthenticationFailed("no API key was sent")
        key = await self._lookups.get(hash_key(secret), self.store.find_key)
        if key is None:
            raise AuthenticationFailed("the API key is not valid")
        if key.revoked_at is not None:
            raise AuthenticationFailed("the API key has been revoked")
        return key

    async def list(self) -> list[ApiKey]:
        return await self.store.list_keys()

    async def revoke(self, id_or_name: str) -> ApiKey:
        key = await self.store.revoke_key(id_or_name, now=self.clock())
        if key is None:
            raise NotFound(f"no key has the id or name {id_or_name!r}")
        self._lookups.clear()
        return key

    async def has_keys(self) -> bool:
        return bool(await self.store.list_keys())

    async def tenant_exists(self, tenant: str) -> bool:
        """Whether ``tenant`` has a key (live or revoked), a job or a batch."""
        if any(key.tenant == tenant for key in await self.store.list_keys()):
            return True
        if await self.store.list_jobs(JobFilter(tenant=tenant, limit=1)):
            return True
        return bool(
            await self.store.list_batches(BatchFilter(tenant=tenant, dialect=None, limit=1))
        )

    @staticmethod
    def require_admin(key: ApiKey) -> ApiKey:
        """``key`` when it is an admin key; NotFound otherwise.

        For admin-only routes: to any other key they do not exist (404, like
        another tenant's things), so they reveal nothing.
        """
        if not key.admin:
            raise NotFound("not found")
        return key
