"""What the node protocol checks in what nodes send: sessions, file names, results.

Pure functions of :mod:`inferq.core.node_work`, kept apart from its service.
"""

from __future__ import annotations

import re
from typing import Any

from inferq.core.errors import InvalidRequest
from inferq.core.models import Job
from inferq.core.ports import tenant_prefix
from inferq.core.work import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    PayloadRequest,
    PayloadResult,
    Result,
    Usage,
)

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
            if not all(_number(x) for vector in embedded.vectors for x in vector):
                raise TypeError("a vector holds numbers")
            _check_usage(embedded.usage)
            return embedded
        assert isinstance(job.request, ChatRequest)
        chat = ChatResult.from_dict(data)
        _check_chat(chat)
        return chat
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidRequest(
            f"the result is not a {kind_of_request(job)} result: {exc!r}", param="result"
        ) from exc


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_usage(usage: Usage) -> None:
    counts = (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31 for n in counts):
        raise TypeError("usage counts tokens: whole numbers from 0 to 2147483647")


def _check_chat(chat: ChatResult) -> None:
    """Each field of a chat result has its type (what a node sent is stored as it is, and
    read back by every dialect that renders the job)."""
    texts = [chat.text, chat.finish_reason]
    texts += [text for call in chat.tool_calls for text in (call.id, call.name, call.arguments)]
    if chat.stop_sequence is not None:
        texts.append(chat.stop_sequence)
    tokens = list(chat.logprobs or ())
    for token in tokens:
        tokens += token.top
    texts += [token.token for token in tokens]
    if not all(isinstance(text, str) for text in texts):
        raise TypeError("text, finish_reason, stop_sequence, tool calls and tokens are strings")
    if not all(
        _number(t.logprob) and all(isinstance(b, int) and 0 <= b < 256 for b in t.bytes)
        for t in tokens
    ):
        raise TypeError("a logprob is a number and a token's bytes are 0 to 255")
    _check_usage(chat.usage)
    for other in chat.others:
        _check_chat(other)
