"""Anthropic's Message Batches API: ``/v1/messages/batches``. Handlers translate and
delegate to FileService (the requests, as a JSONL file) and BatchService (which gives
the batch its times and completion window, runs its rows, and writes its results).

Every request is checked when the batch is created, so a bad one is a 400 naming it
(``requests.3.params.max_tokens: Field required``) and nothing is stored; the requests
are then written as a JSONL file, and the batch created over it, before the answer.
From there on it is a batch like OpenAI's and Fireworks': durable rows, resumed
exactly after a crash, its results written once every row has ended.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import StreamingResponse

from inferq.api.anthropic.batch_format import ENDPOINT, KIND, REQUESTS, in_request, parse_params
from inferq.api.anthropic.batch_format import results_id as results_record
from inferq.api.anthropic.batch_schemas import MAX_PAGE, REQUESTS_META, BatchCreate, render_batch
from inferq.api.anthropic.results import results
from inferq.api.deps import CallerDep, Services, ServicesDep
from inferq.api.routing import Router
from inferq.core import jsontext
from inferq.core.batch_format import NewBatch
from inferq.core.errors import ClientError, Conflict, InvalidRequest, NotFound
from inferq.core.models import Batch

router = Router(prefix="/v1/messages/batches", tags=["anthropic"])

DIALECT = "anthropic"
ID_PREFIX = "msgbatch_"
#: batches read per store call while looking for a ``before_id``
_SCAN = 500


def _check(body: BatchCreate, services: Services) -> list[bytes]:
    """Every request checked as ``POST /v1/messages`` checks it; its JSONL lines."""
    most = services.batches.limits.max_rows
    if len(body.requests) > most:
        raise InvalidRequest(
            f"requests: {len(body.requests)} requests; a batch may hold at most {most}",
            param="requests",
        )
    lines: list[bytes] = []
    seen: dict[str, int] = {}
    for n, item in enumerate(body.requests):
        where = f"requests.{n}"
        if item.custom_id in seen:
            raise InvalidRequest(
                f"{where}.custom_id: {item.custom_id!r} is also the custom_id of "
                f"requests.{seen[item.custom_id]}; every custom_id must be unique",
                param=f"{where}.custom_id",
            )
        seen[item.custom_id] = n
        params = parse_params(item.params, prefix=f"{where}.params")
        try:
            services.registry.validate(params.model, params.to_request())
        except ClientError as exc:
            raise in_request(exc, f"{where}.params") from None
        line = {"custom_id": item.custom_id, "params": item.params}
        lines.append(jsontext.dumps(line).encode() + b"\n")
    return lines


async def _chunks(lines: list[bytes]) -> AsyncIterator[bytes]:
    for start in range(0, len(lines), 1000):
        yield b"".join(lines[start : start + 1000])


@router.post("")
async def create_batch(
    body: BatchCreate, request: Request, caller: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    lines = _check(body, services)
    batch_id = ID_PREFIX + uuid.uuid4().hex
    record = await services.files.create_dataset(
        batch_id, tenant=caller.tenant, kind=KIND, purpose="message_batch", filename=REQUESTS
    )
    try:
        await services.files.add_dataset_file(record, name=REQUESTS, chunks=_chunks(lines))
        stored, _ = await services.batches.submit(
            NewBatch(
                id=batch_id,
                tenant=caller.tenant,
                dialect=DIALECT,
                endpoint=ENDPOINT,
                input_file_id=batch_id,
                meta={REQUESTS_META: len(lines)},
            )
        )
    except ClientError:
        # refused (too many open batches, say): no requests without their batch. Only a
        # refusal: after a store error or a cancellation the batch may have been stored
        await services.files.delete(batch_id, tenant=caller.tenant, kind=KIND)
        raise
    return await _render(services, stored, request)


@router.get("")
async def list_batches(
    request: Request,
    caller: CallerDep,
    services: ServicesDep,
    before_id: str | None = None,
    after_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> dict[str, Any]:
    """Newest first; ``after_id`` pages towards older batches, ``before_id`` towards newer."""
    if before_id is not None and after_id is not None:
        raise InvalidRequest("give before_id or after_id, not both", param="before_id")
    if before_id is not None:
        page, has_more = await _newer_than(services, caller.tenant, before_id, limit)
    else:
        found = await services.batches.list(
            tenant=caller.tenant, dialect=DIALECT, limit=limit + 1, after=after_id
        )
        page, has_more = found[:limit], len(found) > limit
    return {
        "data": [await _render(services, b, request) for b in page],
        "has_more": has_more,
        "first_id": page[0].id if page else None,
        "last_id": page[-1].id if page else None,
    }


async def _newer_than(
    services: Services, tenant: str, before_id: str, limit: int
) -> tuple[list[Batch], bool]:
    """The ``limit`` batches just newer than ``before_id``, newest first, and whether
    there are newer ones still. The store pages from the newest down, so this reads
    every batch newer than the cursor (a tenant's message batches, not its rows)."""
    newer: list[Batch] = []
    after: str | None = None
    while found := await services.batches.list(
        tenant=tenant, dialect=DIALECT, limit=_SCAN, after=after
    ):
        for batch in found:
            if batch.id == before_id:
                return newer[-limit:], len(newer) > limit
            newer.append(batch)
        after = found[-1].id
    return [], False  # no such batch: nothing is before it


@router.get("/{batch_id}")
async def get_batch(
    batch_id: str, request: Request, caller: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    return await _render(services, await _get(services, batch_id, caller.tenant), request)


@router.post("/{batch_id}/cancel")
async def cancel_batch(
    batch_id: str, request: Request, caller: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    await _get(services, batch_id, caller.tenant)
    try:
        cancelled = await services.batches.cancel(batch_id, tenant=caller.tenant)
    except Conflict:
        raise Conflict(
            f"message batch {batch_id} has already ended and can no longer be canceled",
            param="batch_id",
        ) from None
    return await _render(services, cancelled, request)


@router.delete("/{batch_id}")
async def delete_batch(batch_id: str, caller: CallerDep, services: ServicesDep) -> dict[str, Any]:
    batch = await _ended(
        services, batch_id, caller.tenant, "is still being processed; cancel it, and delete it"
    )
    # the files first: a delete cut short leaves the batch, and repeating it finishes
    for record_id in (results_record(batch_id), batch.input_file_id):
        with contextlib.suppress(NotFound):
            await services.files.delete(record_id, tenant=caller.tenant, kind=KIND)
    await services.batches.delete(batch_id, tenant=caller.tenant)
    return {"id": batch_id, "type": "message_batch_deleted"}


@router.get("/{batch_id}/results", response_model=None)
async def batch_results(
    batch_id: str, caller: CallerDep, services: ServicesDep
) -> StreamingResponse:
    batch = await _ended(
        services, batch_id, caller.tenant, "has not ended yet; its results are available"
    )
    return StreamingResponse(await results(services.files, batch), media_type="application/x-jsonl")


async def _get(services: Services, batch_id: str, tenant: str) -> Batch:
    batch = await services.batches.get(batch_id, tenant=tenant)
    if batch.dialect != DIALECT:  # another dialect's batch is not a message batch
        raise NotFound(f"message batch {batch_id} not found", param="batch_id")
    return batch


async def _ended(services: Services, batch_id: str, tenant: str, refusal: str) -> Batch:
    """The batch, once it has ended; InvalidRequest saying ``refusal`` before."""
    batch = await _get(services, batch_id, tenant)
    if not batch.state.terminal:
        raise InvalidRequest(
            f"message batch {batch_id} {refusal} once its processing_status is ended",
            param="batch_id",
        )
    return batch


async def _render(services: Services, batch: Batch, request: Request) -> dict[str, Any]:
    """The batch object; its ``results_url`` starts with ``INFERQ_PUBLIC_URL`` (the server
    as clients reach it) when that is set, else with the request's own address."""
    base = services.settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    url = f"{base}{router.prefix}/{batch.id}/results"
    return render_batch(batch, await services.batches.counts(batch), url)
