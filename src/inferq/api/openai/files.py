"""OpenAI's Files API: ``/v1/files``. Handlers translate and delegate to FileService.

Uploads are streamed: the multipart body is read chunk by chunk straight into
the blob store (:mod:`inferq.api.multipart`), never held whole in memory.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from typing import IO, Annotated, Any, Literal

from fastapi import Query, Request
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from inferq.api.deps import CallerDep, ServicesDep
from inferq.api.multipart import MultipartReader, Part, form_body
from inferq.api.openai.files_schemas import (
    UPLOAD_PURPOSES,
    check_purpose,
    clean_filename,
    list_page,
    render_file,
)
from inferq.api.ranges import download
from inferq.api.routing import Router
from inferq.core.errors import InvalidRequest, PayloadTooLarge
from inferq.core.files import FileService
from inferq.core.models import FileRecord
from inferq.core.retention import expires_after

router = Router(prefix="/v1", tags=["openai"])

#: a file sent before its ``purpose`` is kept in memory up to this size, then on disk
_SPOOL_IN_MEMORY = 1 << 20
#: the form fields of ``expires_after`` (as the SDK flattens it), and its keys
EXPIRES_AFTER = {"expires_after[anchor]": "anchor", "expires_after[seconds]": "seconds"}
#: records read per store round trip when listing oldest first
_SCAN_PAGE = 1000


_UPLOAD_FORM = form_body(
    {
        "file": {"type": "string", "format": "binary"},
        "purpose": {"type": "string", "enum": sorted(UPLOAD_PURPOSES)},
    },
    required=["file", "purpose"],
)


@router.post("/files", openapi_extra=_UPLOAD_FORM)
async def create_file(request: Request, caller: CallerDep, services: ServicesDep) -> dict[str, Any]:
    try:
        record = await _upload(request, caller.tenant, services.files)
    except ClientDisconnect:
        raise InvalidRequest("the upload was interrupted", param="file") from None
    return render_file(record)


async def _upload(request: Request, tenant: str, files: FileService) -> FileRecord:
    """Read the form; stream its ``file`` into the blob store as soon as ``purpose`` is known."""
    reader = MultipartReader(request.stream(), request.headers.get("content-type"))
    purpose: str | None = None
    record: FileRecord | None = None
    spooled: tuple[str, IO[bytes]] | None = None
    expiry: dict[str, Any] = {}
    try:
        async for part in reader:
            if part.name == "purpose":
                if purpose is not None:
                    raise InvalidRequest("purpose: given more than once", param="purpose")
                purpose = check_purpose(await part.text())
            elif part.name == "file":
                if record is not None or spooled is not None:
                    raise InvalidRequest("file: give exactly one file", param="file")
                filename = clean_filename(part.filename)
                if purpose is not None:
                    record = await files.upload(
                        tenant=tenant, purpose=purpose, filename=filename, chunks=part.chunks()
                    )
                else:
                    # curl -F file=@x -F purpose=batch: the purpose comes last
                    spooled = filename, await _spool(part, files.limits.max_bytes)
            elif part.name in EXPIRES_AFTER:
                expiry[EXPIRES_AFTER[part.name]] = await part.text()
            else:
                # fields a newer SDK may add: read and ignored
                await part.text()
        if purpose is None:
            raise InvalidRequest(
                "purpose: is required; use one of " + ", ".join(sorted(UPLOAD_PURPOSES)),
                param="purpose",
            )
        if spooled is not None:
            filename, spool = spooled
            record = await files.upload(
                tenant=tenant, purpose=purpose, filename=filename, chunks=_unspool(spool)
            )
        if record is None:
            raise InvalidRequest("file: is required (a form field holding the file)", param="file")
        if expiry:
            seconds = expires_after(expiry, param="expires_after")
            record = await files.expire_after(record, seconds)
    except BaseException:
        if record is not None:  # the form was bad after the file was stored
            await files.delete(record.id, tenant=tenant)
        raise
    finally:
        if spooled is not None:
            spooled[1].close()
    return record


async def _spool(part: Part, max_bytes: int) -> IO[bytes]:
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
    size = 0
    try:
        async for chunk in part.chunks():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"the file is larger than the limit of {max_bytes} bytes")
            await asyncio.to_thread(spool.write, chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


async def _unspool(spool: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(spool.read, 1 << 16):
        yield chunk


@router.get("/files")
async def list_files(
    caller: CallerDep,
    services: ServicesDep,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> dict[str, Any]:
    if order == "desc":
        found = await services.files.list(
            tenant=caller.tenant, limit=limit + 1, after=after, purpose=purpose
        )
    else:
        found = await _oldest_first(
            services.files, caller.tenant, limit=limit + 1, after=after, purpose=purpose
        )
    return list_page([render_file(r) for r in found[:limit]], has_more=len(found) > limit)


async def _oldest_first(
    files: FileService, tenant: str, *, limit: int, after: str | None, purpose: str | None
) -> list[FileRecord]:
    """Up to ``limit`` records, oldest first, newer than ``after``.

    An ``after`` that names none of the tenant's records gives none, as the store's
    newest-first listing (and ``GET /v1/batches``) does. The store lists newest first
    only, so this walks that listing (down to ``after``) and keeps its last ``limit``
    records: memory stays within ``limit`` records, but the time grows with the number
    of the tenant's files.
    """
    floor = 0  # list the records past this seq (the stores number them from 1)
    if after is not None:
        # a record of another purpose, or an expired one (which the listing leaves
        # out), is a place too
        anchor = await files.find(after, tenant=tenant)
        if anchor is None:
            return []
        floor = anchor.seq
    tail: list[FileRecord] = []
    cursor: str | None = None
    while True:
        page = await files.list(tenant=tenant, limit=_SCAN_PAGE, after=cursor, purpose=purpose)
        stop = next((i for i, r in enumerate(page) if r.seq <= floor), None)
        tail = (tail + page[:stop])[-limit:]
        if stop is not None or len(page) < _SCAN_PAGE:
            break
        cursor = page[-1].id
    tail.reverse()
    return tail


@router.get("/files/{file_id}")
async def get_file(file_id: str, caller: CallerDep, services: ServicesDep) -> dict[str, Any]:
    return render_file(await services.files.get(file_id, tenant=caller.tenant))


@router.get("/files/{file_id}/content", response_model=None)
async def file_content(
    file_id: str, request: Request, caller: CallerDep, services: ServicesDep
) -> StreamingResponse:
    record = await services.files.get(file_id, tenant=caller.tenant)
    media_type = (
        "application/jsonl"
        if record.filename.endswith(".jsonl") or record.purpose.startswith("batch")
        else "application/octet-stream"
    )
    return await download(
        lambda start, stop: services.files.content(record, start=start, stop=stop),
        size=record.bytes,
        range_header=request.headers.get("range"),
        media_type=media_type,
        headers={"content-disposition": f'attachment; filename="{record.filename}"'},
    )


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, caller: CallerDep, services: ServicesDep) -> dict[str, Any]:
    record = await services.files.delete(file_id, tenant=caller.tenant)
    return {"id": record.id, "object": "file", "deleted": True}
