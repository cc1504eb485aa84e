"""Core jobs and errors in the shapes of Anthropic's Messages API."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse

from inferq.api.anthropic.tools import content_blocks
from inferq.core import jsontext
from inferq.core.errors import EngineUnavailable, InferqError, StoreUnavailable
from inferq.core.models import Job
from inferq.core.work import ChatResult

#: the error ``type`` of each status Anthropic documents; any other 4xx is an
#: ``invalid_request_error``, any other 5xx an ``api_error``
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
#: Anthropic's 529 for "cannot take it now" (its SDK retries it), where others answer 503
STATUSES: Mapping[type[InferqError], int] = {StoreUnavailable: 529, EngineUnavailable: 529}


def error_body(exc: InferqError, status: int) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": exc.message}}


def render_error(exc: InferqError, status: int) -> JSONResponse:
    return JSONResponse(error_body(exc, status), status_code=status)


def message_id(job: Job) -> str:
    return "msg_" + job.id


def stop_reason(result: ChatResult) -> str:
    """Anthropic's ``stop_reason`` of a finished generation."""
    if result.tool_calls:
        return "tool_use"
    if result.stop_sequence is not None:
        return "stop_sequence"
    if result.finish_reason == "length":
        return "max_tokens"
    return "end_turn"


def render_usage(job: Job) -> dict[str, Any]:
    """Anthropic counts the prompt tokens read from the cache apart from ``input_tokens``."""
    usage = job.usage
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def render_message(job: Job) -> dict[str, Any]:
    """The ``message`` object of a succeeded job."""
    assert isinstance(job.result, ChatResult), "only succeeded chat jobs have a message"
    return {
        "id": message_id(job),
        "type": "message",
        "role": "assistant",
        "content": content_blocks(job, job.result),
        "model": job.model,
        "stop_reason": stop_reason(job.result),
        "stop_sequence": job.result.stop_sequence,
        "usage": render_usage(job),
    }


def message_start(job: Job) -> dict[str, Any]:
    """The first event of a stream: the message with no content and no usage yet."""
    return {
        "type": "message_start",
        "message": {
            "id": message_id(job),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": job.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        },
    }


def message_delta(job: Job) -> dict[str, Any]:
    """The event that ends a stream's message: why it stopped, and its usage."""
    assert isinstance(job.result, ChatResult)
    return {
        "type": "message_delta",
        "delta": {
            "stop_reason": stop_reason(job.result),
            "stop_sequence": job.result.stop_sequence,
        },
        "usage": render_usage(job),
    }


def text_delta(text: str, index: int = 0) -> dict[str, Any]:
    return {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "text_delta", "text": text},
    }


def whole_blocks(job: Job) -> list[dict[str, Any]]:
    """The events of a finished answer's blocks, each sent whole: a text block's text in
    one delta, a ``tool_use`` block's input in one ``input_json_delta``."""
    assert isinstance(job.result, ChatResult)
    events: list[dict[str, Any]] = []
    for index, block in enumerate(content_blocks(job, job.result)):
        start = {**block, "text": ""} if block["type"] == "text" else {**block, "input": {}}
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        if block["type"] == "text":
            events.append(text_delta(block["text"], index))
        else:
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    return events


BLOCK_START = {
    "type": "content_block_start",
    "index": 0,
    "content_block": {"type": "text", "text": ""},
}
PING = {"type": "ping"}
BLOCK_STOP = {"type": "content_block_stop", "index": 0}
MESSAGE_STOP = {"type": "message_stop"}


def sse(data: dict[str, Any]) -> str:
    """One server-sent event, named by its ``type`` as Anthropic names them."""
    body = jsontext.dumps(data)
    return f"event: {data['type']}\ndata: {body}\n\n"
