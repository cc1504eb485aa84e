"""OpenAI's Batch API: ``/v1/batches``. Handlers translate and delegate to BatchService
(which gives a batch its id, its times and its completion window).

A batch is created in ``validating``; the batch runner (in every process that
runs a worker) validates its input file, runs its rows and writes the output
and error files. Clients poll ``GET /v1/batches/{id}`` until it has ended.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Query

from inferq.api.deps import CallerDep, Services, ServicesDep
from inferq.api.openai.batches_schemas import (
    MAX_IDEMPOTENCY_KEY,
    STATUS,
    BatchCreate,
    render_batch,
)
from inferq.api.openai.files_schemas import list_page
from inferq.api.routing import Router
from inferq.core.batch_format import NewBatch
from inferq.core.errors import Conflict, InvalidRequest, NotFound
from inferq.core.models import Batch
from inferq.core.retention import output_expiry

router = Router(prefix="/v1", tags=["openai"])

DIALECT = "openai"
#: the purpose an input file must have been uploaded with
INPUT_PURPOSE = "batch"


@router.post("/batches")
async def create_batch(
    body: BatchCreate,
    caller: CallerDep,
    services: ServicesDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, Any]:
    body.check()
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(
            f"Idempotency-Key: must be 1-{MAX_IDEMPOTENCY_KEY} characters",
            param="Idempotency-Key",
        )
    try:
        record = await services.files.get(body.input_file_id, tenant=caller.tenant)
    except NotFound:
        raise NotFound(
            f"input file {body.input_file_id} not found", param="input_file_id"
        ) from None
    if record.purpose != INPUT_PURPOSE:
        raise InvalidRequest(
            f"input_file_id: file {record.id} has purpose {record.purpose!r}; "
            f"a batch's input file must be uploaded with purpose {INPUT_PURPOSE!r}",
            param="input_file_id",
        )
    stored, created = await services.batches.submit(
        NewBatch(
            tenant=caller.tenant,
            dialect=DIALECT,
            endpoint=body.endpoint,
            input_file_id=body.input_file_id,
            meta={"metadata": body.metadata, **output_expiry(body.output_expires_after)},
            id_prefix="batch_",
            idempotency_key=idempotency_key,
        )
    )
    if not created and (
        stored.input_file_id != body.input_file_id or stored.endpoint != body.endpoint
    ):
        raise Conflict(
            f"Idempotency-Key {idempotency_key!r} was already used for batch {stored.id} "
            "with a different input_file_id or endpoint",
            param="Idempotency-Key",
        )
    return await _render(services, stored)


@router.get("/batches")
async def list_batches(
    caller: CallerDep,
    services: ServicesDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    found = await services.batches.list(
        tenant=caller.tenant, dialect=DIALECT, limit=limit + 1, after=after
    )
    page = [await _render(services, b) for b in found[:limit]]
    return list_page(page, has_more=len(found) > limit)


@router.get("/batches/{batch_id}")
async def get_batch(batch_id: str, caller: CallerDep, services: ServicesDep) -> dict[str, Any]:
    return await _render(services, await _get(services, batch_id, caller.tenant))


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, caller: CallerDep, services: ServicesDep) -> dict[str, Any]:
    await _get(services, batch_id, caller.tenant)
    try:
        cancelled = await services.batches.cancel(batch_id, tenant=caller.tenant)
    except Conflict:
        # say it with OpenAI's status names, not the core's states
        current = await _get(services, batch_id, caller.tenant)
        raise Conflict(
            f"batch {batch_id} is {STATUS[current.state]} and can no longer be cancelled",
            param="batch_id",
        ) from None
    return await _render(services, cancelled)


async def _get(services: Services, batch_id: str, tenant: str) -> Batch:
    batch = await services.batches.get(batch_id, tenant=tenant)
    if batch.dialect != DIALECT:  # another dialect's batch (Fireworks) is not an OpenAI batch
        raise NotFound(f"batch {batch_id} not found", param="batch_id")
    return batch


async def _render(services: Services, batch: Batch) -> dict[str, Any]:
    return render_batch(batch, await services.batches.counts(batch))
