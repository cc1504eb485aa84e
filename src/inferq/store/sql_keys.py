"""The SQL store's API keys (:class:`~inferq.core.ports.KeyStore`): each kept with the
SHA-256 of its secret, never the secret."""

from __future__ import annotations

from typing import Generic, TypeVar

from inferq.core.errors import Conflict
from inferq.core.models import ApiKey
from inferq.store import rows
from inferq.store.executor import Executor

E = TypeVar("E", bound=Executor)


class SqlKeys(Generic[E]):
    """API keys over the executor ``db``."""

    db: E

    async def insert_key(self, key: ApiKey, *, key_hash: str) -> None:
        try:
            await self.db.execute("insert_key", rows.key_params(key, key_hash))
        except Conflict as exc:
            raise Conflict(f"a key named {key.name!r} already exists", param="name") from exc

    async def find_key(self, key_hash: str) -> ApiKey | None:
        row = await self.db.fetch_one("find_key", {"key_hash": key_hash})
        return rows.row_to_key(row) if row else None

    async def list_keys(self) -> list[ApiKey]:
        return [rows.row_to_key(r) for r in await self.db.fetch_all("list_keys", {})]

    async def revoke_key(self, id_or_name: str, *, now: float) -> ApiKey | None:
        row = await self.db.fetch_one("revoke_key", {"key": id_or_name, "now": now})
        return rows.row_to_key(row) if row else None
