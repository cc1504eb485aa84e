"""Nodes: machines that run models for inferq and pull their work over HTTP.

A node is a credential, not a process: ``inferq nodes create`` makes one and shows its
token once; every ``inferq node`` process started with that token is the node (one
process or several, each with its own session). The store keeps only the token's
SHA-256 (tokens are 256 random bits, so a fast hash is enough), looks the digest up and
compares it once more in constant time. A node token is a credential of its own kind:
it opens the node protocol (``/node/v1/...``) and nothing else, and an API key does
not open the protocol.

What a node announces (its models and their capacity, its version) and how busy it
is are kept on its record, written at most once a second per node, for ``inferq nodes
list`` and for :meth:`NodeService.serving`: whether a node serving a model is connected
(a sync request for a model only nodes run is refused at once while none is:
:meth:`inferq.core.node_work.NodeWork.check_connected`). The protocol itself (claims,
heartbeats, results) is :mod:`inferq.core.node_work`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from inferq.core.errors import (
    AuthenticationFailed,
    Conflict,
    EngineUnavailable,
    InvalidRequest,
    NotFound,
)
from inferq.core.lookups import LIMIT, TimedLookups, TimedValue

TOKEN_PREFIX = "iqn-"
#: a node's record (last seen, in flight) is written at most this often
TOUCH_EVERY = 1.0
#: the nodes read for :meth:`NodeService.serving` are trusted this long: a node that
#: connects to another process is seen this much later (to this one: at once)
ROSTER_SECONDS = 1.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """A node's credential and what it last told the server."""

    id: str
    name: str
    #: the token's first characters, to recognise it
    prefix: str
    created_at: float
    revoked_at: float | None = None
    #: the models it runs and how many jobs of each at once (its last hello)
    models: dict[str, int] = field(default_factory=dict)
    version: str = ""
    last_seen: float | None = None
    #: jobs it ran at its last claim or heartbeat
    in_flight: int = 0
    #: replicated jobs whose answers were compared, and those where its answer was too
    #: far from the winner's (core.node_replicas)
    compared: int = 0
    disagreed: int = 0
    #: the SHA-256 of its token (never the token)
    token_hash: str = field(default="", repr=False)

    def evolve(self, **changes: Any) -> Node:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Seen:
    """What a node's hello, claim, heartbeat or bye tells about it."""

    #: None: the node said bye (not seen since)
    now: float | None
    in_flight: int
    #: given by a hello only
    version: str | None = None
    models: Mapping[str, int] | None = None


class NodeAuthFailed(AuthenticationFailed):
    """A valid node token is required."""

    code = "invalid_node_token"


class NoNodeConnected(EngineUnavailable):
    """No node serving the model is connected; retry later."""

    code = "no_node_connected"
    #: what Retry-After says (seconds): a node that connects is seen within a second
    #: (:data:`ROSTER_SECONDS`), so a client may look again soon, but not at once
    RETRY_AFTER = 5.0

    def __init__(self, model: str, *, needed: int = 1, retry_after: float = RETRY_AFTER) -> None:
        which = (
            "no node serving it is connected"
            if needed == 1
            else f"its jobs run on {needed} nodes and fewer serving it are connected"
        )
        super().__init__(f"the model {model} runs on nodes and {which}; retry later", param="model")
        self.retry_after = retry_after


class NodeStore(Protocol):
    """Node credentials and what the nodes report."""

    async def insert_node(self, node: Node) -> None:
        """Store a new node (its token's hash in ``node.token_hash``).

        Raises :class:`~inferq.core.errors.Conflict` when a node has this name.
        """

    async def find_node(self, token_hash: str) -> Node | None:
        """The node whose token has this hash, revoked or not."""

    async def list_nodes(self) -> list[Node]:
        """Every node, oldest first."""

    async def revoke_node(self, id_or_name: str, *, now: float) -> Node | None:
        """Revoke the node with this id or name; None when there is none."""

    async def touch_node(self, node_id: str, seen: Seen) -> None:
        """Record that the node was seen (with its version and models, when given)."""

    async def count_agreement(self, node_ids: list[str], *, disagreed: list[str]) -> None:
        """Count one compared job for each of ``node_ids`` and one disagreement for each
        of ``disagreed``."""


@dataclass(eq=False)
class NodeService:
    """Creating, checking and revoking node credentials; what nodes report."""

    store: NodeStore
    #: how long a looked-up token is trusted (a revocation takes this long to bite)
    cache_seconds: float = 2.0
    clock: Callable[[], float] = time.time
    #: how long the nodes read for :meth:`serving` are trusted
    roster_seconds: float = ROSTER_SECONDS

    def __post_init__(self) -> None:
        self._lookups: TimedLookups[Node] = TimedLookups(self.cache_seconds, clock=self.clock)
        self._roster: TimedValue[list[Node]] = TimedValue(
            self.roster_seconds, self.store.list_nodes, clock=self.clock
        )
        #: when each node's record was last written
        self._touched: dict[str, float] = {}

    async def create(self, *, name: str) -> tuple[Node, str]:
        """Create a node; return it with its token (which is not stored)."""
        name = name.strip()
        if not _NAME.match(name):
            raise InvalidRequest(
                "a node name is 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit",
                param="name",
            )
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        node = Node(
            id="node_" + uuid.uuid4().hex[:16],
            name=name,
            prefix=secret[: len(TOKEN_PREFIX) + 6],
            created_at=self.clock(),
            token_hash=hash_token(secret),
        )
        try:
            await self.store.insert_node(node)
        except Conflict as exc:
            raise Conflict(f"a node named {name!r} already exists", param="name") from exc
        return node, secret

    async def authenticate(self, secret: str | None) -> Node:
        """The live node for ``secret``; :class:`NodeAuthFailed` otherwise."""
        if not secret:
            raise NodeAuthFailed("no node token was sent")
        digest = hash_token(secret)
        node = await self._lookups.get(digest, self.store.find_node)
        if node is None or not hmac.compare_digest(node.token_hash, digest):
            raise NodeAuthFailed("the node token is not valid")
        if node.revoked_at is not None:
            raise NodeAuthFailed(f"the node token of {node.name} has been revoked")
        return node

    async def list(self) -> list[Node]:
        return await self.store.list_nodes()

    async def revoke(self, id_or_name: str) -> Node:
        node = await self.store.revoke_node(id_or_name, now=self.clock())
        if node is None:
            raise NotFound(f"no node has the id or name {id_or_name!r}")
        self._lookups.clear()
        self._roster.clear()
        return node

    async def hello(self, node: Node, *, version: str, models: Mapping[str, int]) -> Node:
        """A node process started: record its version and models (at once)."""
        now = self.clock()
        await self.store.touch_node(node.id, Seen(now, 0, version, models))
        self._touched[node.id] = now
        self._lookups.clear()
        self._roster.clear()
        return node.evolve(version=version, models=dict(models), last_seen=now)

    async def gone(self, node: Node) -> None:
        """A process of the node stopped cleanly: the node is not connected until it is
        heard from again (its models are kept for then)."""
        await self.store.touch_node(node.id, Seen(None, 0))
        self._touched.pop(node.id, None)
        self._lookups.clear()
        self._roster.clear()

    async def seen(self, node: Node, *, in_flight: int) -> None:
        """The node claimed or sent a heartbeat: note it, at most once a second."""
        now = self.clock()
        if now - self._touched.get(node.id, 0.0) < TOUCH_EVERY:
            return
        if len(self._touched) >= LIMIT:
            self._touched.clear()
        self._touched[node.id] = now
        await self.store.touch_node(node.id, Seen(now, in_flight))

    async def serving(self, model: str, *, within: float, count: int = 1) -> bool:
        """Whether ``count`` nodes (one by default) that are not revoked, announced
        ``model`` in their last hello and were seen in the last ``within`` seconds exist.

        The store's records are the truth (a node connected to another API process
        counts); they are read at most once every :attr:`roster_seconds`, and again at
        once after a hello to this process."""
        since = self.clock() - within
        serving = sum(
            1
            for node in await self._roster.get()
            if node.revoked_at is None
            and model in node.models
            and node.last_seen is not None
            and node.last_seen >= since
        )
        return serving >= count
