"""A JSON body that its route reads and validates itself, for the queue's submit routes.

FastAPI, given a body parameter and a key dependency, reads the body through every
middleware's ``receive``, parses the JSON a second time (the input guard parsed it
already), works out the content type with :mod:`email`, and solves the dependency and
the body through its general machinery: 3-12% of a submit's CPU (docs/benchmarks.md, "The
submit routes read their own body").

:func:`caller_and_body` takes the same steps, in the same order and with the same
outcome, from what the guard kept (:data:`inferq.api.guard.BODY`): the JSON is read (a
malformed body is a ``json_invalid`` validation error), the caller is authenticated and
admitted, then the body is validated. A failure raises the
:class:`~fastapi.exceptions.RequestValidationError` FastAPI would have raised, so every
dialect renders it as before. A route that uses it declares its body with
:func:`documented` for the OpenAPI document.
"""

from __future__ import annotations

import email.message
import functools
import json
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from inferq.api.deps import get_caller
from inferq.api.guard import BODY, NOT_PARSED
from inferq.core import jsontext
from inferq.core.models import ApiKey

ModelT = TypeVar("ModelT", bound=BaseModel)

#: no body at all (FastAPI's ``Undefined``): a required body is "missing"
_ABSENT: Any = object()

_answer_text = jsontext.compact(allow_nan=False)


class JsonAnswer(JSONResponse):
    """A :class:`~fastapi.responses.JSONResponse` (the same bytes) whose JSON comes from
    an encoder made once (:mod:`inferq.core.jsontext`): for a submit's answer the one
    ``json.dumps`` makes at each call is most of the answer's cost."""

    def render(self, content: Any) -> bytes:
        return _answer_text(content).encode()


async def caller_and_body(request: Request, model: type[ModelT]) -> tuple[ApiKey, ModelT]:
    """The calling key and the body validated as ``model``, as FastAPI gives them to a
    route that takes ``body: model`` and ``caller: CallerDep``."""
    received = await _received(request)
    caller = await get_caller(request)
    return caller, validated(model, received)


def validated(model: type[ModelT], received: Any) -> ModelT:
    """``received`` (parsed JSON, raw bytes, or nothing) validated as ``model``, or
    FastAPI's validation error for the body."""
    if received is _ABSENT:
        missing = ValidationError.from_exception_data(
            "Field required", [{"type": "missing", "loc": ("body",), "input": {}}]
        ).errors(include_url=False)[0]
        missing["input"] = None
        raise RequestValidationError([missing], body=None)
    try:
        return model.model_validate(received, from_attributes=True)
    except ValidationError as exc:
        errors = [
            {**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)
        ]
        raise RequestValidationError(errors, body=received) from None


def documented(model: type[BaseModel]) -> dict[str, Any]:
    """The ``openapi_extra`` of a route that reads ``model`` with :func:`caller_and_body`:
    its request body, as FastAPI documents a body parameter. Models nested in it are
    referred to among the document's components (where a route that takes them as
    FastAPI parameters puts them)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return {
        "requestBody": {
            "content": {"application/json": {"schema": schema}},
            "required": True,
        }
    }


async def _received(request: Request) -> Any:
    """The body as FastAPI would hand it to validation: the parsed JSON when the first
    ``Content-Type`` says JSON, the bytes otherwise, :data:`_ABSENT` when empty."""
    kept = request.scope.get(BODY)
    if kept is not None:
        data, parsed = kept
    else:  # the guard did not read it (not a JSON type, or the client went away)
        try:
            data = await request.body()
        except HTTPException:
            raise
        except Exception as exc:
            raise HTTPException(400, "There was an error parsing the body") from exc
        parsed = NOT_PARSED
    if not data:
        return _ABSENT
    content_type = request.headers.get("content-type")
    if not content_type or not _names_json(content_type):
        return data
    if parsed is not NOT_PARSED:
        return parsed
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        error = {
            "type": "json_invalid",
            "loc": ("body", exc.pos),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": exc.msg},
        }
        raise RequestValidationError([error], body=exc.doc) from exc


@functools.lru_cache(maxsize=64)
def _names_json(content_type: str) -> bool:
    """Whether FastAPI parses a body of this ``Content-Type`` as JSON (decided as it
    does; kept per header value, which a client sends the same on every request)."""
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")
