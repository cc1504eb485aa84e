"""Fireworks' dataset endpoints, and the signed URLs that move a dataset's bytes.

A dataset is a core :class:`~inferq.core.models.FileRecord` of kind ``dataset``
holding named files. Bytes arrive by ``:upload`` (multipart) or by a signed
``PUT /v1/uploads/{token}`` that ``:getUploadEndpoint`` hands out, and leave by
a signed ``GET /v1/downloads/{token}`` from ``:getDownloadEndpoint``; either way
they stream straight between the socket and the blob store.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from inferq.api.deps import CallerDep, Services, ServicesDep, api_key_from
from inferq.api.errors import status_of
from inferq.api.fireworks import jobs, signing
from inferq.api.fireworks.paging import PageDep, list_page
from inferq.api.fireworks.schemas import DatasetCreate, DatasetUpdate, UploadEndpointRequest
from inferq.api.fireworks.translate import (
    FORMATS,
    STATUSES,
    AlreadyExists,
    Forbidden,
    check_id,
    render_dataset,
    render_error,
    unsupported_filter,
)
from inferq.api.multipart import MultipartReader
from inferq.api.ranges import download
from inferq.api.routing import Router
from inferq.core.errors import (
    InferqError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    public,
)
from inferq.core.files import DATASET, check_filename, file_names
from inferq.core.models import FileRecord

router = Router(tags=["fireworks"])

DATASETS = "/v1/accounts/{account_id}/datasets"
ONE = DATASETS + "/{dataset_id}"
#: the custom methods of a dataset (``POST .../datasets/{id}:upload`` ...)
VERBS = frozenset({"upload", "getUploadEndpoint", "validateUpload", "getDownloadEndpoint"})
#: bytes handed to the blob store at a time
CHUNK = 64 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


async def _dataset(services: Services, tenant: str, dataset_id: str) -> FileRecord:
    if ":" in dataset_id:
        # ``GET .../datasets/x:upload``: a custom method called with the wrong verb
        verb = dataset_id.rsplit(":", 1)[1]
        if verb in VERBS:
            raise MethodNotAllowed(f"{verb} does not take this HTTP method")
    return await services.files.get(dataset_id, tenant=tenant, kind=DATASET)


async def _save(services: Services, record: FileRecord, **meta: Any) -> FileRecord:
    updated = record.evolve(meta={**record.meta, **meta, "updatedAt": time.time()})
    return await services.files.update(updated)


async def _in_chunks(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for data in stream:
        for start in range(0, len(data), CHUNK):
            yield data[start : start + CHUNK]


def _upload_name(filename: str | None) -> str:
    """A blob-safe file name for an uploaded file (its base name, odd characters replaced)."""
    base = re.split(r"[\\/]", filename or "")[-1]
    name = _UNSAFE.sub("_", base)[:200].strip(".")
    return name or "dataset.jsonl"


# -- datasets ----------------------------------------------------------------------------


@router.post(DATASETS)
async def create_dataset(
    account_id: str, body: DatasetCreate, caller: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    dataset_id = check_id(body.dataset_id, what="dataset", param="datasetId")
    spec = body.dataset
    if body.source_dataset_id:
        raise InvalidRequest(
            "sourceDatasetId: deriving a dataset from another is not supported; upload its file",
            param="sourceDatasetId",
        )
    if spec.external_url:
        raise InvalidRequest(
            "dataset.externalUrl: this server fetches nothing from outside; upload the file",
            param="dataset.externalUrl",
        )
    if spec.example_count is None:
        raise InvalidRequest(
            "example_count is required for uploaded datasets", param="dataset.exampleCount"
        )
    fmt = spec.format or "FORMAT_UNSPECIFIED"
    if fmt not in FORMATS:
        raise InvalidRequest(
            f"dataset.format: {fmt!r} is not one of {', '.join(sorted(FORMATS))}",
            param="dataset.format",
        )
    if dataset_id in await jobs.pending_outputs(services, caller.tenant):
        # publishing the job's results would overwrite it
        raise AlreadyExists(
            f"dataset {dataset_id} already exists: an open batch inference job writes it",
            param="datasetId",
        )
    meta = {
        "displayName": spec.display_name or "",
        "format": fmt,
        "exampleCount": str(spec.example_count),
        "userUploaded": spec.user_uploaded or {},
        "sourceJobName": spec.source_job_name or "",
        "createdBy": caller.name,
        "account": account_id,
    }
    record = await services.files.create_dataset(dataset_id, tenant=caller.tenant, meta=meta)
    return render_dataset(record, account_id)


@router.get(DATASETS)
async def list_datasets(
    account_id: str, caller: CallerDep, services: ServicesDep, query: PageDep
) -> dict[str, Any]:
    fetch = partial(services.files.list, tenant=caller.tenant, kind=DATASET)
    page = await list_page(fetch, query, dataset_filter(query.filter))
    return page.body("datasets", [render_dataset(r, account_id) for r in page.items])


_DATASET_FILTER = re.compile(r'\s*(state|format|displayName|sourceJobName)\s*=\s*"?([^"]*)"?\s*')


def dataset_filter(text: str | None) -> Callable[[FileRecord], bool]:
    """A simple AIP-160 filter: one ``field=value`` on state, format, displayName, sourceJobName."""
    if not text or not text.strip():
        return lambda record: True
    match = _DATASET_FILTER.fullmatch(text)
    if match is None:
        raise unsupported_filter(
            text, "one field=value comparison on state, format, displayName or sourceJobName"
        )
    field, value = match.groups()
    return lambda record: str(render_dataset(record, "-").get(field, "")) == value


@router.post(ONE + ":upload")
async def upload(
    account_id: str, dataset_id: str, request: Request, caller: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    record = await _dataset(services, caller.tenant, dataset_id)
    stored: tuple[str, int] | None = None
    async for part in MultipartReader(request.stream(), request.headers.get("content-type")):
        if part.name == "file" and stored is None:
            name = _upload_name(part.filename)
            updated = await services.files.add_dataset_file(
                record, name=name, chunks=_in_chunks(part.chunks())
            )
            stored = name, updated.meta["files"][name]
    if stored is None:
        raise InvalidRequest("file: the form has no field named file", param="file")
    return {
        "id": record.id,
        "object": "file",
        "bytes": stored[1],
        "created_at": int(record.created_at),
        "filename": stored[0],
        "purpose": "dataset",
    }


@router.post(ONE + ":getUploadEndpoint")
async def upload_endpoint(
    account_id: str,
    dataset_id: str,
    body: UploadEndpointRequest,
    request: Request,
    caller: CallerDep,
    services: ServicesDep,
) -> dict[str, Any]:
    record = await _dataset(services, caller.tenant, dataset_id)
    limit = services.settings.max_file_bytes
    for name, size in body.filename_to_size.items():
        check_filename(name)
        if size < 0:
            raise InvalidRequest(
                f"filenameToSize.{name}: must not be negative", param="filenameToSize"
            )
        if size > limit:
            raise PayloadTooLarge(f"{name}: {size} bytes is more than the limit of {limit} bytes")
    pending = {**record.meta.get("pendingUploads", {}), **body.filename_to_size}
    await _save(services, record, pendingUploads=pending)
    expires = int(time.time() + services.settings.signed_url_seconds)
    urls = {
        name: _signed_url(
            request,
            services,
            "uploads",
            signing.Grant(caller.tenant, record.id, name, "PUT", expires, size),
        )
        for name, size in body.filename_to_size.items()
    }
    return {"filenameToSignedUrls": urls}


@router.post(ONE + ":validateUpload")
async def validate_upload(
    account_id: str, dataset_id: str, caller: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    record = await _dataset(services, caller.tenant, dataset_id)
    files: dict[str, int] = record.meta.get("files", {})
    pending: dict[str, int] = record.meta.get("pendingUploads", {})
    for name, size in sorted(pending.items()):
        if name not in files:
            raise InvalidRequest(f"{name} was never uploaded to its signed URL", param=name)
        if files[name] != size:
            raise InvalidRequest(
                f"{name} holds {files[name]} bytes, but {size} were announced", param=name
            )
    if not files:
        raise InvalidRequest(f"dataset {record.id} has no uploaded file", param="dataset_id")
    if pending:
        await _save(services, record, pendingUploads={})
    return {}


@router.get(ONE + ":getDownloadEndpoint")
async def download_endpoint(
    account_id: str, dataset_id: str, request: Request, caller: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    if await request.body():
        raise InvalidRequest("getDownloadEndpoint is a GET without a body", param="body")
    record = await _dataset(services, caller.tenant, dataset_id)
    seconds = services.settings.signed_url_seconds
    expires = int(time.time() + seconds)
    urls: dict[str, str] = {}
    for name in file_names(record):
        # a bucket's presigned URL, so the bytes need not pass through inferq; else ours
        url = await services.files.download_url(record, name, expires_in=seconds)
        urls[f"dataset/{record.id}/{name}"] = url or _signed_url(
            request,
            services,
            "downloads",
            signing.Grant(caller.tenant, record.id, name, "GET", expires),
        )
    return {"filenameToSignedUrls": urls}


@router.patch(ONE)
async def update_dataset(
    account_id: str, dataset_id: str, body: DatasetUpdate, caller: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    record = await _dataset(services, caller.tenant, dataset_id)
    changes: dict[str, Any] = {}
    if body.display_name is not None:
        changes["displayName"] = body.display_name
    if body.example_count is not None:
        changes["exampleCount"] = str(body.example_count)
    if body.format is not None:
        if body.format not in FORMATS:
            raise InvalidRequest(f"format: {body.format!r} is not a format", param="format")
        changes["format"] = body.format
    return render_dataset(await _save(services, record, **changes), account_id)


@router.get(ONE)
async def get_dataset(
    account_id: str, dataset_id: str, caller: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    return render_dataset(await _dataset(services, caller.tenant, dataset_id), account_id)


@router.delete(ONE)
async def delete_dataset(
    account_id: str, dataset_id: str, caller: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    record = await _dataset(services, caller.tenant, dataset_id)
    await services.files.delete(record.id, tenant=caller.tenant, kind=DATASET)
    return {}


# -- signed URLs -----------------------------------------------------------------------------


def _signed_url(request: Request, services: Services, kind: str, grant: signing.Grant) -> str:
    token = signing.sign(grant, services.settings.signing_secret())
    # The configured public URL when there is one: the Host header is the client's to choose.
    base = services.settings.public_url or str(request.base_url).rstrip("/")
    return f"{base}/v1/{kind}/{token}"


async def _grant(request: Request, services: Services, token: str, method: str) -> signing.Grant:
    """The grant of a signed URL; Forbidden when tampered, expired or another tenant's."""
    try:
        grant = signing.verify(
            token, services.settings.signing_secret(), method=method, now=time.time()
        )
    except signing.BadToken as exc:
        raise Forbidden(f"the signed URL is not valid: {exc}") from None
    # The signature is the credential; a key sent along must be the same tenant's.
    secret = api_key_from(request)
    if secret is not None:
        key = await services.keys.authenticate(secret)
        if key.tenant != grant.tenant:
            raise Forbidden("the signed URL belongs to another tenant")
    return grant


@router.put("/v1/uploads/{token}", response_model=None)
async def put_upload(token: str, request: Request, services: ServicesDep) -> Response:
    try:
        grant = await _grant(request, services, token, "PUT")
        record = await services.files.get(grant.dataset, tenant=grant.tenant, kind=DATASET)
        await services.files.add_dataset_file(
            record, name=grant.name, chunks=_in_chunks(request.stream()), expected_size=grant.size
        )
    except InferqError as exc:
        # /v1/uploads/ is not under /v1/accounts/: answer in Fireworks' shape here
        return render_error(public(exc), status_of(exc, STATUSES))
    return Response(status_code=200)


@router.get("/v1/downloads/{token}")
async def get_download(token: str, request: Request, services: ServicesDep) -> StreamingResponse:
    grant = await _grant(request, services, token, "GET")
    record = await services.files.get(grant.dataset, tenant=grant.tenant, kind=DATASET)
    if grant.name not in file_names(record):
        raise NotFound(f"dataset {record.id} has no file {grant.name}", param="name")
    return await download(
        lambda start, stop: services.files.content(record, grant.name, start=start, stop=stop),
        size=int(record.meta["files"][grant.name]),
        range_header=request.headers.get("range"),
        media_type="application/octet-stream",
        headers={"content-disposition": f'attachment; filename="{grant.name}"'},
    )
