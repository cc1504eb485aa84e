"""What the node protocol checks in what nodes send: sessions, file names, results.

Pure functions of :mod:`inferq.core.node_work`, kept apart from its service.
"""

from __future__ import annotations

import re
from typing import Any

from inferq.core.errors import InvalidRequest
from inferq.core.models import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    Job,
    PayloadRequest,
    PayloadResult,
    Result,
)
from inferq.core.ports import tenant_prefix

SESSION = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
FILE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


def kind_of_request(job: Job) -> str:
    if isinstance(job.request, EmbedRequest):
        return "embed"
    if isinstance(job.request, PayloadRequest):
        return "payload"
    return "chat"


def output_key(job: Job, name: str) -> str:
    """Where an output file of ``job`` is kept: under its tenant."""
    return f"{tenant_prefix(job.tenant)}/node-outputs/{job.id}/{name}"


def check_file_name(name: str) -> str:
    if not FILE_NAME.match(name) or name in (".", ".."):
        raise InvalidRequest(
            "a file name is 1 to 128 letters, digits, '.', '_' or '-', not starting with '.'",
            param="name",
        )
    return name


def check_session(session: str) -> str:
    if not SESSION.match(session):
        raise InvalidRequest("session is 8 to 64 letters, digits, '_' or '-'", param="session")
    return session


def parse_result(job: Job, data: dict[str, Any]) -> Result:
    """The result a node sent, read as the kind of result ``job`` needs (400 otherwise)."""
    try:
        if isinstance(job.request, PayloadRequest):
            outputs = data.get("outputs")
            if not isinstance(outputs, dict):
                raise InvalidRequest("a handler's result needs outputs: an object", param="result")
            return PayloadResult(outputs=outputs)
        if isinstance(job.request, EmbedRequest):
            embedded = EmbedResult.from_dict(data)
            if len(embedded.vectors) != len(job.request.inputs):
                raise InvalidRequest("one vector per input is needed", param="result")
            return embedded
        assert isinstance(job.request, ChatRequest)
        chat = ChatResult.from_dict(data)
        if not isinstance(chat.text, str) or not isinstance(chat.finish_reason, str):
            raise InvalidRequest("text and finish_reason are strings", param="result")
        return chat
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidRequest(
            f"the result is not a {kind_of_request(job)} result: {exc!r}", param="result"
        ) from exc
