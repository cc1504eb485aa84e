"""The node store (:class:`~inferq.core.nodes.NodeStore`) over SQL and in memory.

:class:`SqlNodes` is mixed into :class:`~inferq.store.sql_store.SqlStore` (its named
queries are in each database's ``queries.sql``), :class:`MemoryNodes` into the
memory fake.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, Generic, TypeVar, cast

from inferq.core.errors import Conflict
from inferq.core.models import Lease
from inferq.core.nodes import Node, Seen
from inferq.core.ports import JobQueue
from inferq.core.work import Result
from inferq.store.executor import Executor, Params, Steps, count
from inferq.store.rows import Row, dumps


def node_params(node: Node) -> dict[str, Any]:
    return {
        name: getattr(node, name) for name in ("id", "name", "prefix", "token_hash", "created_at")
    }


#: the columns read back as they are
_PLAIN = "id name prefix created_at revoked_at version last_seen in_flight compared disagreed"


def row_to_node(row: Row) -> Node:
    models = row["models"]
    plain = {name: row[name] for name in (*_PLAIN.split(), "token_hash")}
    return Node(**plain, models=json.loads(models) if isinstance(models, str) else dict(models))


E = TypeVar("E", bound=Executor)


class SqlNodes(Generic[E]):
    """The node queries, run on the store's executor ``db``."""

    db: E

    async def insert_node(self, node: Node) -> None:
        try:
            await self.db.execute("insert_node", node_params(node))
        except Conflict as exc:
            raise Conflict(f"a node named {node.name!r} already exists", param="name") from exc

    async def find_node(self, token_hash: str) -> Node | None:
        row = await self.db.fetch_one("find_node", {"token_hash": token_hash})
        return row_to_node(row) if row else None

    async def list_nodes(self) -> list[Node]:
        return [row_to_node(r) for r in await self.db.fetch_all("list_nodes", {})]

    async def revoke_node(self, id_or_name: str, *, now: float) -> Node | None:
        row = await self.db.fetch_one("revoke_node", {"node": id_or_name, "now": now})
        return row_to_node(row) if row else None

    async def touch_node(self, node_id: str, seen: Seen) -> None:
        params = {"id": node_id, "now": seen.now, "in_flight": seen.in_flight}
        models = dumps(dict(seen.models)) if seen.models is not None else None
        await self.db.execute("touch_node", {**params, "version": seen.version, "models": models})

    async def count_agreement(self, node_ids: list[str], *, disagreed: list[str]) -> None:
        params = {"ids": list(node_ids), "disagreed": list(disagreed)}
        await self.db.execute("count_agreement", params)

    async def complete_leases(
        self, done: Sequence[tuple[Lease, Result]], *, now: float
    ) -> list[bool]:
        """:class:`~inferq.core.node_messages.LeaseCompletes`: one write for a node's batch
        of results (on SQLite one item of the writer's group, not one per job)."""
        # sql_store imports this module: its complete parameters are looked up here
        from inferq.store.sql_store import complete_params

        if not done:
            return []
        return await self._complete_many(
            [complete_params(lease, result, now) for lease, result in done]
        )

    async def _complete_many(self, batch: list[Params]) -> list[bool]:
        """Whether each complete (of distinct jobs) held its fence: the statements of one
        transaction (a database with one statement for them all overrides this)."""
        return await self.db.atomic(_each("complete", batch))


def _each(query: str, batch: list[Params]) -> Steps[list[bool]]:
    """Run ``query`` once for each parameter set; whether each changed a row."""
    changed = []
    for params in batch:
        changed.append((yield count(query, params)) > 0)
    return changed


class MemoryNodes:
    """The nodes in a dictionary (the memory store's fake)."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, Node] = {}

    async def insert_node(self, node: Node) -> None:
        if any(n.name == node.name or n.id == node.id for n in self.nodes.values()):
            raise Conflict(f"a node named {node.name!r} already exists", param="name")
        self.nodes[node.id] = node

    async def find_node(self, token_hash: str) -> Node | None:
        return next((n for n in self.nodes.values() if n.token_hash == token_hash), None)

    async def list_nodes(self) -> list[Node]:
        return sorted(self.nodes.values(), key=lambda n: n.created_at)

    async def revoke_node(self, id_or_name: str, *, now: float) -> Node | None:
        for node in self.nodes.values():
            if id_or_name in (node.id, node.name):
                revoked = node.revoked_at if node.revoked_at is not None else now
                self.nodes[node.id] = dataclasses.replace(node, revoked_at=revoked)
                return self.nodes[node.id]
        return None

    async def touch_node(self, node_id: str, seen: Seen) -> None:
        node = self.nodes.get(node_id)
        if node is not None:
            self.nodes[node_id] = node.evolve(
                last_seen=seen.now,
                in_flight=seen.in_flight,
                version=node.version if seen.version is None else seen.version,
                models=node.models if seen.models is None else dict(seen.models),
            )

    async def complete_leases(
        self, done: Sequence[tuple[Lease, Result]], *, now: float
    ) -> list[bool]:
        complete = cast(JobQueue, self).complete
        return [await complete(lease, result, now=now) for lease, result in done]

    async def count_agreement(self, node_ids: list[str], *, disagreed: list[str]) -> None:
        for node_id in node_ids:
            node = self.nodes.get(node_id)
            if node is not None:
                self.nodes[node_id] = node.evolve(
                    compared=node.compared + 1, disagreed=node.disagreed + (node_id in disagreed)
                )
