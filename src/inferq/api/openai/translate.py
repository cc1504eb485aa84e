"""Core jobs and errors in OpenAI's shapes."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse

from inferq.core.errors import InferqError, NotFound

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(exc: InferqError, status: int) -> dict[str, Any]:
    code = exc.code
    if isinstance(exc, NotFound) and exc.param == "model":
        code = "model_not_found"
    return {
        "error": {
            "message": exc.message,
            "type": ERROR_TYPES.get(status, "server_error"),
            "param": exc.param,
            "code": code,
        }
    }


def render_error(exc: InferqError, status: int) -> JSONResponse:
    return JSONResponse(error_body(exc, status), status_code=status)


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"


SSE_DONE = "data: [DONE]\n\n"
