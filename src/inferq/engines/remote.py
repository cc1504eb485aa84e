"""Models that nodes run: ``engine = "remote"`` in the server's models file.

A remote model is not loaded here. Its jobs are queued (and accepted while no node is
connected, but for a sync request's: refused at once then, as it could only wait out its
deadline, :meth:`~inferq.core.node_work.NodeWork.check_connected`); ``inferq node``
processes elsewhere claim them over HTTP through the node protocol
(:mod:`inferq.core.node_work`) and the in-process worker leaves them alone
(:attr:`~inferq.engines.base.Engine.runs_here` is False). It is always ready, so
``/readyz`` does not wait for nodes. ::

    [models."my-org/video-generator"]
    engine = "remote"
    handler = true          # a node's Python handler: freeform payloads (Together queue)

    [models."smollm2-135m-instruct"]
    engine = "remote"       # chat, run by a node's own engine
    context_length = 2048

    [models."smollm2-135m-embed"]
    engine = "remote"
    embedding = true

    [models."llama3.2:3b"]
    engine = "remote"
    replicas = 3            # each job on 3 distinct nodes, the majority answer returned
    agree_model = "smollm2-135m-embed"   # an embedding model this server runs
    agree_threshold = 0.9   # (default) an answer less similar to the winner's disagreed
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from inferq.core.errors import ConfigError, EngineUnavailable, InvalidRequest
from inferq.core.node_replicas import Embedder, Replication
from inferq.core.work import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    PayloadRequest,
    Request,
)
from inferq.engines.base import AbortSignal, Call, Engine, ModelSpec

if TYPE_CHECKING:
    from inferq.engines.registry import ModelRegistry

#: the request kinds a remote model may serve (what a node's claim hands out)
CHAT, EMBED, PAYLOAD = "chat", "embed", "payload"


def remote_kind(spec: ModelSpec) -> str:
    """What a remote model runs: a handler's payloads, embeddings or chat."""
    handler = spec.options.get("handler", False)
    if not isinstance(handler, bool):
        raise ConfigError(f"model {spec.name!r}: handler is true or false")
    if handler and spec.options.get("embedding", False):
        raise ConfigError(f"model {spec.name!r}: a handler model cannot be an embedding model")
    if handler:
        return PAYLOAD
    return EMBED if spec.options.get("embedding", False) else CHAT


def replication(spec: ModelSpec) -> Replication | None:
    """How a remote chat model's jobs are cross-checked (``replicas`` above 1), or None."""
    options = spec.options
    replicas = options.get("replicas", 1)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 9:
        raise ConfigError(f"model {spec.name!r}: replicas is an integer from 1 to 9")
    if replicas == 1:
        return None
    agree = options.get("agree_model")
    threshold = options.get("agree_threshold", 0.9)
    if remote_kind(spec) != CHAT or not isinstance(agree, str) or not agree:
        raise ConfigError(
            f"model {spec.name!r}: replicas are for chat models, with agree_model naming the "
            "embedding model that compares their answers"
        )
    if not isinstance(threshold, int | float) or not 0 < threshold <= 1:
        raise ConfigError(f"model {spec.name!r}: agree_threshold is above 0 and at most 1")
    return Replication(replicas=replicas, agree_model=agree, threshold=float(threshold))


class RemoteEngine(Engine):
    """A model whose jobs nodes run; nothing runs here."""

    runs_here = False

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.kind = remote_kind(spec)
        self.replication = replication(spec)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @property
    def ready(self) -> bool:
        return True

    def check(self, request: Request) -> None:
        if self.kind != PAYLOAD:
            super().check(request)
        elif not isinstance(request, PayloadRequest):
            raise InvalidRequest(
                f"model {self.spec.name} runs a node's handler: submit a freeform payload "
                "to the queue (POST /v1/queue/submit)",
                param="model",
            )

    async def _generate(self, request: ChatRequest, call: Call) -> ChatResult:
        raise self._elsewhere()

    async def _embed(self, request: EmbedRequest, call: Call) -> EmbedResult:
        raise self._elsewhere()

    def _elsewhere(self) -> EngineUnavailable:
        return EngineUnavailable(f"model {self.spec.name} runs on nodes, not in this process")


def kinds_of(registry: ModelRegistry) -> Callable[[str], str | None]:
    """What each model of ``registry`` that nodes serve runs (None: not served by nodes)."""

    def kind(name: str) -> str | None:
        engine = registry.engines.get(name)
        return engine.kind if isinstance(engine, RemoteEngine) else None

    return kind


def takes_payload(registry: ModelRegistry, name: str) -> bool:
    """Whether ``name`` is a model whose jobs are a node handler's freeform payloads."""
    engine = registry.engines.get(name)
    return isinstance(engine, RemoteEngine) and engine.kind == PAYLOAD


def replications_of(registry: ModelRegistry) -> Callable[[str], Replication | None]:
    """How each remote model of ``registry`` is cross-checked (None: it is not)."""

    for engine in registry:
        if isinstance(engine, RemoteEngine) and engine.replication is not None:
            _check_agree_model(registry, engine.spec.name, engine.replication.agree_model)

    def plan(name: str) -> Replication | None:
        engine = registry.engines.get(name)
        return engine.replication if isinstance(engine, RemoteEngine) else None

    return plan


def _check_agree_model(registry: ModelRegistry, name: str, agree: str) -> None:
    """The model comparing ``name``'s answers is an embedding model this server runs."""
    engine = registry.engines.get(agree)
    if engine is None or not engine.embeds or not engine.runs_here:
        raise ConfigError(
            f"model {name!r}: agree_model {agree!r} is not an embedding model this server "
            "runs (a model of its models file with embedding = true and an engine other "
            'than "remote")'
        )


def embedder(registry: ModelRegistry) -> Embedder:
    """Embeds texts with one of ``registry``'s models, in this process (it must be loaded:
    a server with its worker)."""

    async def embed(model: str, texts: list[str]) -> Sequence[Sequence[float]]:
        result = await registry.get(model).embed(EmbedRequest(tuple(texts)), abort=AbortSignal())
        return result.vectors

    return embed
