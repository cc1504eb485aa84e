"""Fireworks' batch inference job endpoints. Handlers translate and delegate to
BatchService (which gives a job its times and completion window, and wakes the runner).

A job is a core :class:`~inferq.core.models.Batch` of dialect ``fireworks``:
its input is a dataset, its rows default to the job's inferenceParameters, and
the runner writes ``BIJOutputSet.jsonl`` and ``error-data`` into the output
dataset (see :mod:`inferq.api.fireworks.batch_format`). Fireworks has no cancel
call: deleting a running job stops it, then removes it.
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

from fastapi import Request

from inferq.api.deps import CallerDep, Services, ServicesDep
from inferq.api.fireworks.paging import PageDep, list_page
from inferq.api.fireworks.schemas import JobCreate
from inferq.api.fireworks.translate import (
    PRECISIONS,
    AlreadyExists,
    check_id,
    full_model,
    model_name,
    render_job,
    resource_id,
    row_defaults,
    state_filter,
)
from inferq.api.routing import Router
from inferq.core.batch_format import NewBatch
from inferq.core.errors import InvalidRequest, NotFound
from inferq.core.files import DATASET
from inferq.core.models import Batch, BatchCounts
from inferq.core.states import JobState

router = Router(tags=["fireworks"])

JOBS = "/v1/accounts/{account_id}/batchInferenceJobs"
DIALECT = "fireworks"
ENDPOINT = "/v1/chat/completions"
OPEN_STATES = frozenset(state for state in JobState if not state.terminal)


async def _job(services: Services, tenant: str, job_id: str) -> Batch:
    not_found = NotFound(f"batch inference job {job_id} not found", param="batchInferenceJobId")
    try:
        batch = await services.batches.get(job_id, tenant=tenant)
    except NotFound:
        raise not_found from None
    if batch.dialect != DIALECT:
        raise not_found
    return batch


async def _render(services: Services, batch: Batch, account: str) -> dict[str, Any]:
    return render_job(batch, await services.batches.counts(batch), account)


async def pending_outputs(services: Services, tenant: str) -> set[str]:
    """The output datasets that the tenant's open jobs will create when they end."""
    open_jobs = await services.batches.list(
        tenant=tenant, dialect=DIALECT, limit=10_000, states=OPEN_STATES
    )
    return {batch.meta["outputDatasetId"] for batch in open_jobs}


async def _output_dataset(services: Services, tenant: str, wanted: str | None) -> str:
    """The output dataset's id: the one asked for, which must not exist yet, or a new one."""
    if wanted is not None:
        dataset_id = resource_id(wanted, "datasets", param="outputDatasetId")
        exists = await services.files.exists(dataset_id, tenant=tenant)
        if exists or dataset_id in await pending_outputs(services, tenant):
            raise AlreadyExists(f"dataset {dataset_id} already exists", param="outputDatasetId")
        return dataset_id
    while True:
        dataset_id = "bij-" + uuid.uuid4().hex[:8]
        if not await services.files.exists(dataset_id, tenant=tenant):
            return dataset_id


def _model(services: Services, value: str) -> str:
    name = model_name(value)
    if name not in services.registry.names():
        raise InvalidRequest(
            f"model {value!r} does not exist; available: "
            + ", ".join(sorted(services.registry.names())),
            param="model",
        )
    return name


@router.post(JOBS)
async def create_job(
    account_id: str, body: JobCreate, request: Request, caller: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    query = request.query_params
    job_id = query.get("batchInferenceJobId") or query.get("batch_inference_job_id")
    if job_id:
        check_id(job_id, what="job", param="batchInferenceJobId")
        await _check_free(services, caller.tenant, job_id)
    params, echo = row_defaults(body.inference_parameters)
    earlier: Batch | None = None
    if body.continued_from_job_name:
        earlier = await _job(
            services,
            caller.tenant,
            resource_id(
                body.continued_from_job_name, "batchInferenceJobs", param="continuedFromJobName"
            ),
        )
        params, echo = _continued(earlier, body, params, echo)
    model_value = body.model or (earlier.meta.get("model") if earlier else None)
    input_value = body.input_dataset_id or (earlier.input_file_id if earlier else None)
    if not model_value:
        raise InvalidRequest("model: required unless continuedFromJobName is set", param="model")
    if not input_value:
        raise InvalidRequest(
            "inputDatasetId: required unless continuedFromJobName is set", param="inputDatasetId"
        )
    model = _model(services, model_value)
    input_id = resource_id(input_value, "datasets", param="inputDatasetId")
    await services.files.get(input_id, tenant=caller.tenant, kind=DATASET)
    if earlier is not None and (model != earlier.model or input_id != earlier.input_file_id):
        raise InvalidRequest(
            "a continued job reruns the requests of the job it continues: leave model and "
            "inputDatasetId out, or give the same ones",
            param="continuedFromJobName",
        )
    precision = body.precision or "PRECISION_UNSPECIFIED"
    if precision not in PRECISIONS:
        raise InvalidRequest(f"precision: {precision!r} is not a precision", param="precision")
    output_id = await _output_dataset(services, caller.tenant, body.output_dataset_id)
    stored, _ = await services.batches.submit(
        NewBatch(
            id=job_id or None,
            id_prefix="",  # a new id is a bare hex string, a valid Fireworks resource id
            tenant=caller.tenant,
            dialect=DIALECT,
            model=model,
            endpoint=ENDPOINT,
            input_file_id=input_id,
            params=params,
            meta={
                "account": account_id,
                "displayName": body.display_name or "",
                "model": full_model(model_value),
                "outputDatasetId": output_id,
                "precision": precision,
                "inferenceParameters": echo,
                "createdBy": caller.name,
            },
            continued_from=earlier.id if earlier else None,
        )
    )
    return render_job(stored, BatchCounts(), account_id)


async def _check_free(services: Services, tenant: str, job_id: str) -> None:
    """AlreadyExists when the tenant has a batch (of any dialect) with this id."""
    try:
        await services.batches.get(job_id, tenant=tenant)
    except NotFound:
        return
    raise AlreadyExists(f"batch inference job {job_id} already exists", param="batchInferenceJobId")


def _continued(
    earlier: Batch, body: JobCreate, params: dict[str, Any], echo: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A continued job's row defaults: the earlier job's (its rows are rerun as they were)."""
    if body.inference_parameters is not None and params != earlier.params:
        raise InvalidRequest(
            "inferenceParameters: a continued job reruns the requests of the job it "
            "continues with that job's parameters; leave them out",
            param="inferenceParameters",
        )
    return dict(earlier.params), dict(earlier.meta.get("inferenceParameters") or echo)


@router.get(JOBS)
async def list_jobs(
    account_id: str, caller: CallerDep, services: ServicesDep, query: PageDep
) -> dict[str, Any]:
    states = state_filter(query.filter)
    fetch = partial(services.batches.list, tenant=caller.tenant, dialect=DIALECT, states=states)
    page = await list_page(fetch, query)
    return page.body(
        "batchInferenceJobs", [await _render(services, b, account_id) for b in page.items]
    )


@router.get(JOBS + "/{job_id}")
async def get_job(
    account_id: str, job_id: str, caller: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    return await _render(services, await _job(services, caller.tenant, job_id), account_id)


@router.delete(JOBS + "/{job_id}")
async def delete_job(
    account_id: str, job_id: str, caller: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    await _job(services, caller.tenant, job_id)
    await services.batches.delete(job_id, tenant=caller.tenant)
    return {}
