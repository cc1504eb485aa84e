"""The node protocol (``/node/v1``) and the output files nodes upload (``/v1/outputs``).

Every ``/node/v1`` route takes a node token (``Authorization: Bearer iqn-...``), never
an API key; ``/v1/outputs`` takes an API key, never a node token. Handlers translate
and delegate to :class:`~inferq.core.node_work.NodeWork`.
"""

from __future__ import annotations

import contextlib
import mimetypes
from collections import Counter
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from inferq import __version__
from inferq.api.body import JsonAnswer
from inferq.api.deps import CallerDep, Services, ServicesDep, api_key_from, get_services
from inferq.api.nodes.schemas import (
    MAX_ATTEMPT,
    Bye,
    Claim,
    Complete,
    Fail,
    Heartbeat,
    Hello,
    Release,
    Results,
)
from inferq.api.routing import Router
from inferq.core.errors import ClientError, InvalidRequest
from inferq.core.keys import KEY_PREFIX
from inferq.core.models import Job, JobError
from inferq.core.node_messages import PROTOCOL, Beat, Held, Outcome
from inferq.core.nodes import TOKEN_PREFIX, Node, NodeAuthFailed
from inferq.core.states import ServiceClass

router = Router(tags=["nodes"])


async def get_node(request: Request) -> Node:
    # the services without a dependency of their own: each one FastAPI solves costs a
    # request about 10 µs
    services = await get_services(request)
    token = api_key_from(request)
    if token is not None and token.startswith(KEY_PREFIX) and not token.startswith(TOKEN_PREFIX):
        raise NodeAuthFailed("an API key does not open the node protocol: use a node token")
    return await services.nodes.authenticate(token)


NodeDep = Annotated[Node, Depends(get_node)]


def answer(content: dict[str, Any]) -> Response:
    """A JSON answer, encoded at once: what the protocol's busiest routes answer is JSON
    already (the jobs' own fields), so FastAPI's walk of it (``jsonable_encoder``, per
    value of every job handed out) would only cost time."""
    return JsonAnswer(content)


def render_job(job: Job) -> dict[str, Any]:
    """A claimed job as the node gets it."""
    request = job.request.to_dict()
    return {
        "id": job.id,
        "attempt": job.attempt,
        "model": job.model,
        "kind": request.get("kind", "chat"),
        "request": request,
        "info": job.info,
        "service_class": job.service_class.name.lower(),
        "priority": job.priority,
        "created_at": job.created_at,
    }


@router.post("/node/v1/hello")
async def hello(body: Hello, node: NodeDep, services: ServicesDep) -> dict[str, Any]:
    """A node process starts: it names its protocol version, session and models."""
    if body.protocol != PROTOCOL:
        raise InvalidRequest(
            f"this server speaks node protocol {PROTOCOL}, not {body.protocol}", param="protocol"
        )
    work = services.node_work
    await work.hello(node, session=body.session, version=body.version, models=body.models)
    limits = work.limits
    return {
        "protocol": PROTOCOL,
        "server_version": __version__,
        "node": node.name,
        "lease_seconds": limits.lease_seconds,
        "heartbeat_seconds": limits.heartbeat_seconds,
        "max_wait": limits.max_wait,
        "max_output_bytes": limits.max_output_bytes,
        "max_file_bytes": limits.max_file_bytes,
        "models": {name: work.kind_of(name) for name in body.models},
    }


@router.post("/node/v1/claim", response_class=Response)
async def claim(body: Claim, node: NodeDep, services: ServicesDep, request: Request) -> Response:
    """Lease jobs for the node's free slots; waits up to ``wait`` seconds for some."""

    async def still_wanted() -> bool:
        # a revoked token ends the wait with 401; a node that hung up claims nothing
        await services.nodes.authenticate(api_key_from(request))
        return not await request.is_disconnected()

    jobs = await services.node_work.claim(
        node,
        session=body.session,
        free=body.free,
        wait=body.wait,
        running=body.running,
        still_wanted=still_wanted,
        max_class=ServiceClass[body.max_class.upper()],
    )
    count_claims(services, node, jobs)
    return answer({"jobs": [render_job(job) for job in jobs]})


def count_claims(services: Services, node: Node, jobs: list[Job]) -> None:
    if jobs:
        services.metrics.node_claims.labels(node.name).inc(len(jobs))


@contextlib.contextmanager
def counted_result(services: Services, node: Node, *, failed: bool) -> Iterator[None]:
    """Count the result the block stores (``inferq_node_jobs_total``), or its refusal."""
    try:
        yield
    except ClientError as exc:
        services.metrics.node_reported(node.name, failed=failed, refused=exc.code)
        raise
    services.metrics.node_reported(node.name, failed=failed)


@router.post("/node/v1/heartbeat", response_class=Response)
async def heartbeat(body: Heartbeat, node: NodeDep, services: ServicesDep) -> Response:
    """Renew the leases of running jobs, with their info, progress and text; answers
    which are no longer the node's (cancelled, expired or re-claimed: stop them)."""
    beats = [
        Beat(b.id, b.attempt, info=b.info, progress=b.progress, text=tuple(b.text))
        for b in body.jobs
    ]
    held, lost = await services.node_work.heartbeat(node, session=body.session, beats=beats)
    return answer({"held": held, "cancelled": lost})


@router.post("/node/v1/complete")
async def complete(body: Complete, node: NodeDep, services: ServicesDep) -> dict[str, Any]:
    """The job's result (fenced: 409 when the lease is no longer the node's)."""
    held = Held(body.session, body.id, body.attempt)
    with counted_result(services, node, failed=False):
        await services.node_work.complete(
            node, held, result=body.result, text=body.text, info=body.info
        )
    await services.node_work.settle()
    return {"id": body.id, "state": "succeeded"}


@router.post("/node/v1/fail")
async def fail(body: Fail, node: NodeDep, services: ServicesDep) -> dict[str, Any]:
    """A failed attempt (fenced): retried while attempts remain unless ``retry`` is false."""
    error = JobError(body.error.code, body.error.message)
    held = Held(body.session, body.id, body.attempt)
    with counted_result(services, node, failed=True):
        await services.node_work.fail(node, held, error=error, retry=body.retry, info=body.info)
    await services.node_work.settle()
    return {"id": body.id}


@router.post("/node/v1/results", response_class=Response)
async def results(body: Results, node: NodeDep, services: ServicesDep) -> Response:
    """Several ended attempts at once, each fenced like complete and fail; answers each
    one's fate (``ok``, or the code and message that refused it), and the jobs claimed for
    ``free`` slots in the same request (without waiting)."""
    outcomes = [
        Outcome(
            Held(body.session, item.id, item.attempt),
            result=item.result,
            error=None if item.error is None else JobError(item.error.code, item.error.message),
            retry=item.retry,
            text=tuple(item.text),
            info=item.info,
        )
        for item in body.results
    ]
    fates, jobs = await services.node_work.exchange(
        node, outcomes, session=body.session, free=body.free, running=body.running
    )
    kinds = Counter(
        (outcome.error is not None, None if fate["ok"] else str(fate["code"]))
        for outcome, fate in zip(outcomes, fates, strict=True)
    )
    for (failed, refused), count in kinds.items():
        services.metrics.node_reported(node.name, failed=failed, refused=refused, count=count)
    count_claims(services, node, jobs)
    return answer({"results": fates, "jobs": [render_job(job) for job in jobs]})


@router.post("/node/v1/release")
async def release(body: Release, node: NodeDep, services: ServicesDep) -> dict[str, Any]:
    """Hand jobs back to the queue without using up an attempt (a node stopping)."""
    leases = [(held.id, held.attempt) for held in body.jobs]
    released = await services.node_work.release(node, session=body.session, leases=leases)
    return {"released": released}


@router.post("/node/v1/bye")
async def bye(body: Bye, node: NodeDep, services: ServicesDep) -> dict[str, Any]:
    """A node process stops cleanly (its last call): the jobs it still holds go back to
    the queue, and its node is not connected until it is heard from again, so a sync
    request for its models is refused at once."""
    released = await services.node_work.bye(node, session=body.session)
    return {"status": "bye", "released": released}


@router.put("/node/v1/jobs/{job_id}/files/{name}")
async def put_file(
    job_id: str,
    name: str,
    request: Request,
    node: NodeDep,
    services: ServicesDep,
    session: str = Query(min_length=8, max_length=64),
    attempt: int = Query(ge=1, le=MAX_ATTEMPT),
) -> dict[str, Any]:
    """Upload an output file of a job the node holds; answers the URL that the job's
    tenant reads it at."""
    held = Held(session, job_id, attempt)
    await services.node_work.put_file(node, held, name=name, chunks=request.stream())
    base = services.settings.public_url or str(request.base_url).rstrip("/")
    return {"url": f"{base}/v1/outputs/{job_id}/{name}"}


@router.get("/v1/outputs/{job_id}/{name}", tags=["outputs"])
async def read_output(
    job_id: str, name: str, caller: CallerDep, services: ServicesDep
) -> StreamingResponse:
    """An output file a node uploaded for one of the caller's jobs (404 for anyone else)."""
    size, chunks = await services.node_work.files.read(
        tenant=caller.tenant, job_id=job_id, name=name
    )
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return StreamingResponse(chunks, media_type=media, headers={"content-length": str(size)})
