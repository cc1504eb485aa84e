"""OpenAI's ``POST /v1/embeddings``.

An embedding request is a job like a synchronous chat completion: it is committed
to the queue as INTERACTIVE work (ahead of every queued job, on the slot an
engine keeps free of queued work), waited for with a deadline, and cancelled
when the client disconnects.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from inferq.api.chat import PositiveInt32
from inferq.api.deps import CallerDep, ServicesDep
from inferq.api.routing import Router
from inferq.api.sync import ClientGone, finished_or_raise, submit_watched, wait_for_client
from inferq.core.errors import InvalidRequest, PromptTooLong
from inferq.core.models import Job
from inferq.core.work import EmbedRequest, EmbedResult

#: OpenAI's limit on the number of inputs of one request
MAX_INPUTS = 2048

router = Router(prefix="/v1", tags=["openai"])


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings body; ``input`` is checked by :meth:`to_request`."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: Any
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: PositiveInt32 | None = None
    #: accepted and ignored, as OpenAI uses it only for abuse monitoring
    user: str | None = None
    #: inferq extension: higher runs first among sync requests
    priority: int = 0
    #: inferq extension: seconds before the request is cancelled with a timeout error
    timeout: float | None = Field(default=None, gt=0)

    def to_request(self) -> EmbedRequest:
        return EmbedRequest(inputs=tuple(_texts(self.input)))


def _texts(value: Any) -> list[str]:
    """The texts of ``input``: a string or a list of strings (token ids are refused)."""
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list):
        if not value:
            raise InvalidRequest("input: must not be an empty list", param="input")
        if len(value) > MAX_INPUTS:
            raise InvalidRequest(
                f"input: at most {MAX_INPUTS} inputs per request, got {len(value)}",
                param="input",
            )
        texts = []
        for i, item in enumerate(value):
            if isinstance(item, int | list) and not isinstance(item, bool):
                raise InvalidRequest(
                    "input: token ids are not supported; send the text instead",
                    param=f"input.{i}",
                )
            if not isinstance(item, str):
                raise InvalidRequest(f"input.{i}: must be a string", param=f"input.{i}")
            texts.append(item)
    else:
        raise InvalidRequest("input: must be a string or a list of strings", param="input")
    for i, text in enumerate(texts):
        if not text:
            param = f"input.{i}" if isinstance(value, list) else "input"
            raise InvalidRequest(f"{param}: must not be an empty string", param=param)
    return texts


@router.post("/embeddings", response_model=None)
async def create_embeddings(
    body: EmbeddingRequest, request: Request, caller: CallerDep, services: ServicesDep
) -> Response:
    embed_request = body.to_request()
    services.registry.validate(body.model, embed_request)
    dimensions = services.registry.get(body.model).dimensions
    if body.dimensions is not None and dimensions is not None and body.dimensions != dimensions:
        raise _wrong_dimensions(body.model, body.dimensions, dimensions)
    job, sub = await submit_watched(
        services, caller, body, embed_request, origin="openai", stream=False
    )
    try:
        done = await wait_for_client(request, services.jobs, job, sub=sub)
    except ClientGone:
        return Response(status_code=499)
    try:
        finished = finished_or_raise(done)
    except PromptTooLong as exc:
        raise PromptTooLong(exc.message, param="input") from exc
    result = finished.result
    assert isinstance(result, EmbedResult), "an embedding job ends with vectors"
    if body.dimensions is not None and result.vectors:
        # A process that does not load its models learns the size only now.
        size = len(result.vectors[0])
        if size != body.dimensions:
            raise _wrong_dimensions(body.model, body.dimensions, size)
    content = json.dumps(
        render_embeddings(finished, result, body.encoding_format), separators=(",", ":")
    )
    return Response(content=content, media_type="application/json")


def _wrong_dimensions(model: str, asked: int, actual: int) -> InvalidRequest:
    return InvalidRequest(
        f"dimensions: model {model} makes vectors of {actual} dimensions; "
        f"it cannot shorten them to {asked}",
        param="dimensions",
    )


def render_embeddings(
    job: Job, result: EmbedResult, encoding_format: Literal["float", "base64"]
) -> dict[str, Any]:
    """OpenAI's embeddings list of a succeeded job."""
    tokens = result.usage.prompt_tokens
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(vector, encoding_format)}
            for i, vector in enumerate(result.vectors)
        ],
        "model": job.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encode(vector: tuple[float, ...], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        # OpenAI's format: the float32 values, little-endian, in base64
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return list(vector)
