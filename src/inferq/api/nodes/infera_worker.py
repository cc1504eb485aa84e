"""Infera's node endpoints, over inferq's node machinery (core.node_pull).

An Infera-style node authenticates with its node token (``api_key`` header, as Infera
sends its keys, or ``Authorization: Bearer``; ``update_result`` also takes it from its
body's ``api_key``), announces its models with ``/worker/update_models``, takes chat
jobs one at a time with ``/worker/get_job`` and posts Ollama ``/api/chat`` results with
``/worker/update_result``; ``/worker/ping`` renews the leases of the jobs it runs. These
paths sit at the root, so their errors are Infera's (``{"detail": ...}``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from inferq.api.deps import ServicesDep, api_key_from
from inferq.api.nodes.router import NodeDep, count_claims, counted_result, get_node
from inferq.api.routing import Router
from inferq.core.errors import InvalidRequest
from inferq.core.models import JobError
from inferq.core.node_pull import session_of
from inferq.core.node_replicas import SUFFIX
from inferq.core.nodes import Node
from inferq.core.work import ChatRequest
from inferq.engines.remote import CHAT

router = Router(tags=["infera nodes"])
#: the statuses of a result that succeeded; any other is a failed attempt
DONE = frozenset({"completed", "complete", "success", "succeeded", "done", "ok"})


class Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class NodeRegistration(Lenient):
    node_url: str = Field(max_length=2048)
    node_version: str | None = Field(default=None, max_length=64)


class ModelList(Lenient):
    models: list[str] = Field(min_length=1, max_length=256)


class JobResult(Lenient):
    job_id: str = Field(min_length=1, max_length=128)
    api_key: str = Field(max_length=256)
    model_name: str = Field(min_length=1)
    result: dict[str, Any]
    status: str = Field(min_length=1, max_length=64)


@router.post("/register_node_secret")
async def register_node_secret(node: NodeDep) -> dict[str, Any]:
    """inferq's node credentials are made by ``inferq nodes create``: a node's token is
    already registered; this says whose it is."""
    return {"status": "registered", "node_name": node.name}


@router.post("/check_node_secret")
async def check_node_secret(node: NodeDep) -> dict[str, Any]:
    return {"valid": True, "node_name": node.name}


@router.post("/worker/register_node")
async def register_node(
    body: NodeRegistration, node: NodeDep, services: ServicesDep
) -> dict[str, Any]:
    """Record the node's version (its URL is not used: nodes pull, nothing calls them)."""
    await services.nodes.hello(node, version=body.node_version or "", models=node.models)
    return {"status": "registered", "node_name": node.name}


@router.post("/worker/update_models")
async def update_models(body: ModelList, node: NodeDep, services: ServicesDep) -> dict[str, Any]:
    """The chat models the node runs (one job of each at a time)."""
    work = services.node_work
    for model in body.models:
        if work.kind_of(model) != CHAT:
            raise InvalidRequest(
                f"the model {model!r} is not a chat model served by nodes here", param="models"
            )
    models = dict.fromkeys(body.models, 1)
    await work.hello(node, session=session_of(node), version=node.version, models=models)
    return {"status": "updated", "models": body.models}


@router.post("/worker/deregister_node")
async def deregister_node(node: NodeDep, services: ServicesDep) -> dict[str, Any]:
    """The node leaves: the jobs it runs go back to the queue."""
    released = await services.node_work.pulls.release(node)
    await services.nodes.hello(node, version=node.version, models={})
    return {"status": "deregistered", "released": released}


@router.get("/worker/ping")
async def ping(node: NodeDep, services: ServicesDep) -> dict[str, Any]:
    """Renews the leases of the jobs the node runs."""
    return {"status": "ok", "jobs": await services.node_work.pulls.ping(node)}


@router.get("/worker/get_job")
async def get_job(node: NodeDep, services: ServicesDep) -> dict[str, Any]:
    """One chat job for one of the node's models, as Infera's ``JobRequest``; ``job_id``
    null when none waits."""
    job = await services.node_work.pulls.take(node, kind=CHAT)
    count_claims(services, node, [] if job is None else [job])
    if job is None or not isinstance(job.request, ChatRequest):
        return {"job_id": None}
    request = job.request
    return {
        "job_id": job.id,
        "model": job.model,
        "messages": [m.to_dict() for m in request.messages],
        "max_output": request.max_tokens or 0,
        "temperature": request.temperature,
    }


async def header_node(request: Request) -> Node | None:
    """The node of the token in the headers; None when they carry none."""
    return None if api_key_from(request) is None else await get_node(request)


@router.post("/worker/update_result")
async def update_result(
    body: JobResult,
    services: ServicesDep,
    sender: Annotated[Node | None, Depends(header_node)],
) -> dict[str, Any]:
    """The result of a job the node took: an Ollama ``/api/chat`` response (status
    ``completed``), or a failed attempt (any other status: retried while attempts
    remain). The node token is in the headers or, as Infera's workers send it, in the
    body's ``api_key``."""
    node = sender or await services.nodes.authenticate(body.api_key)
    job = await services.jobs.get(body.job_id, tenant=None)
    if job.model.removesuffix(SUFFIX) != body.model_name:
        raise InvalidRequest(f"job {job.id} is for {job.model}", param="model_name")
    pulls = services.node_work.pulls
    if body.status.lower() in DONE:
        with counted_result(services, node, failed=False):
            await pulls.finish(node, job.id, result=chat_result(body.result), error=None)
    else:
        message = str(body.result.get("error") or f"the node reported {body.status}")
        with counted_result(services, node, failed=True):
            await pulls.finish(node, job.id, result=None, error=JobError("node_error", message))
    return {"status": "updated", "job_id": job.id}


def chat_result(ollama: dict[str, Any]) -> dict[str, Any]:
    """An Ollama ``/api/chat`` response as the node protocol's chat result."""
    message = ollama.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise InvalidRequest("result.message.content is the answer's text", param="result")
    return {
        "text": content,
        "finish_reason": str(ollama.get("done_reason") or "stop"),
        "usage": {
            "prompt_tokens": _count(ollama.get("prompt_eval_count")),
            "completion_tokens": _count(ollama.get("eval_count")),
            "cached_tokens": 0,
        },
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0
