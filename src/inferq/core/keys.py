"""API keys and tenants.

A key is shown once, when it is created; the store keeps only its SHA-256 (keys
are 256 random bits, so a fast hash is enough). Every job belongs to the tenant
of the key that created it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable

from inferq.core.errors import AuthenticationFailed, InvalidRequest, NotFound
from inferq.core.models import ApiKey
from inferq.store.base import JobStore

KEY_PREFIX = "iq-"
#: lookups remembered at most; random bad keys must not grow memory without bound
CACHE_LIMIT = 10_000


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class KeyService:
    def __init__(
        self,
        store: JobStore,
        *,
        cache_seconds: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[str, tuple[ApiKey | None, float]] = {}

    async def create(
        self, *, name: str, tenant: str | None = None, admin: bool = False
    ) -> tuple[ApiKey, str]:
        """Create a key; return it with its secret (which is not stored)."""
        name = name.strip()
        if not name:
            raise InvalidRequest("a key needs a non-empty name", param="name")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(
            id="key_" + uuid.uuid4().hex[:16],
            name=name,
            tenant=(tenant or name).strip(),
            prefix=secret[: len(KEY_PREFIX) + 6],
            created_at=self.clock(),
            admin=admin,
        )
        await self.store.insert_key(key, key_hash=hash_key(secret))
        return key, secret

    async def authenticate(self, secret: str | None) -> ApiKey:
        """The live key for ``secret``; AuthenticationFailed otherwise."""
        if not secret:
            raise AuthenticationFailed("no API key was sent")
        digest = hash_key(secret)
        now = self.clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            key = cached[0]
        else:
            key = await self.store.find_key(digest)
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[digest] = (key, now + self.cache_seconds)
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
        self._cache.clear()
        return key

    async def has_keys(self) -> bool:
        return bool(await self.store.list_keys())
