"""The OpenAI-compatible wire format as the upstream engine speaks it.

Request bodies, server-sent events, chat chunks and whole completions, usage, and
the error shapes of OpenAI, vLLM, SGLang, TGI, llama.cpp, Ollama and FastAPI mapped
to inferq's errors (:func:`classify`). :mod:`inferq.engines.upstream` drives it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import re
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from inferq.core.errors import EngineError, PromptTooLong
from inferq.core.structured import JSON_SCHEMA, TOOL_FUNCTION, TokenLogprob, ToolCall
from inferq.core.work import ChatMessage, ChatRequest, ChatResult, Usage
from inferq.engines.base import TextCallback

#: finish reasons by which an upstream says it stopped the request itself
UPSTREAM_ABORTS = frozenset({"abort", "aborted", "cancelled", "canceled"})
_CONTEXT_ERROR = re.compile(
    r"context[ _-]?(length|window|size)|maximum context|exceed_context|prompt is too long"
    r"|input is too long|longer than the model|tokens \+ .?max_new_tokens",
    re.IGNORECASE,
)


def priority_field(convention: str, urgency: int | None) -> int | None:
    """The ``priority`` value to send to an upstream of ``convention``, or None to
    send none. ``urgency`` is inferq's "higher is more urgent" number."""
    if urgency is None or convention == "none":
        return None
    return -urgency if convention == "vllm" else urgency


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    max_retry_after: float = 60.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failed ``attempt`` (from 1): ``Retry-After`` when the
    upstream named one (at most ``max_retry_after``), otherwise full jitter,
    uniform in [0, min(cap, base * 2 ** (attempt - 1))]."""
    if retry_after is not None:
        return max(0.0, min(retry_after, max_retry_after))
    return (rng or random).uniform(0.0, min(cap, base * 2 ** (attempt - 1)))


class Retry(Exception):
    """An attempt failed in a way that another attempt may not."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, endpoint_down: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        #: take the endpoint out until a health check finds it well
        self.endpoint_down = endpoint_down


class ChatProgress:
    """What the attempts of one chat request received; text only from one of them."""

    def __init__(self, on_text: TextCallback | None) -> None:
        self.on_text = on_text
        self.pieces: list[str] = []
        #: content chunks: the completion tokens when the upstream reports no usage
        self.chunks = 0
        self.events = 0
        self.finish: str | None = None
        self.usage: Usage | None = None
        #: ask without streaming (a stream broke before its first event)
        self.plain = False
        #: the answer read from a whole completion, with its calls and other choices
        self.answer: ChatResult | None = None

    @property
    def emitted(self) -> bool:
        return bool(self.pieces)

    def begin(self) -> None:
        self.events = 0
        self.finish = None
        self.usage = None

    def add_text(self, piece: str) -> None:
        if not piece:
            return
        self.pieces.append(piece)
        self.chunks += 1
        if self.on_text is not None:
            self.on_text(piece)

    def result(self, finish: str) -> ChatResult:
        usage = self.usage or Usage(completion_tokens=self.chunks)
        whole = ChatResult(text="".join(self.pieces), finish_reason=finish, usage=usage)
        return dataclasses.replace(self.answer, usage=usage) if self.answer else whole


def needs_whole(request: ChatRequest) -> bool:
    """Whether to ask without streaming: what the answer carries besides text (calls,
    log probabilities, several choices) is read from a whole completion."""
    return bool(request.tools) or request.logprobs or request.n > 1


def _wire_message(message: ChatMessage) -> dict[str, Any]:
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        data["content"] = message.content or None
        data["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        data["tool_call_id"] = message.tool_call_id
    return data


def _structured_fields(request: ChatRequest) -> dict[str, Any]:
    """The request's format, tools, log probabilities and ``n``, as OpenAI names them."""
    body: dict[str, Any] = {}
    fmt = request.response_format
    if fmt is not None and fmt.kind == JSON_SCHEMA:
        spec = {"name": fmt.name or "response", "schema": fmt.schema or {}, "strict": fmt.strict}
        body["response_format"] = {"type": JSON_SCHEMA, "json_schema": spec}
    elif fmt is not None:
        body["response_format"] = {"type": fmt.kind}
    if request.tools:
        body["tools"] = [
            {"type": "function", "function": dataclasses.asdict(t)} for t in request.tools
        ]
        choice = request.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}}
            if choice.mode == TOOL_FUNCTION
            else choice.mode
        )
    if request.logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = request.top_logprobs
    if request.n > 1:
        body["n"] = request.n
    return body


def answer_of(choice: dict[str, Any]) -> ChatResult:
    """One choice of a whole completion: its text, calls and log probabilities."""
    message = choice.get("message") or {}
    calls = tuple(
        ToolCall(
            id=str(c.get("id") or ""),
            name=str(c["function"]["name"]),
            arguments=str(c["function"].get("arguments") or "{}"),
        )
        for c in message.get("tool_calls") or ()
    )
    content = (choice.get("logprobs") or {}).get("content")
    logprobs = None if content is None else tuple(_logprob(e) for e in content)
    return ChatResult(
        text=str(message.get("content") or ""),
        finish_reason=str(choice.get("finish_reason") or "stop"),
        usage=Usage(),
        tool_calls=calls,
        logprobs=logprobs,
    )


def _logprob(entry: dict[str, Any]) -> TokenLogprob:
    return TokenLogprob(
        token=str(entry.get("token", "")),
        logprob=float(entry.get("logprob", 0.0)),
        bytes=tuple(entry.get("bytes") or ()),
        top=tuple(_logprob(t) for t in entry.get("top_logprobs") or ()),
    )


def chat_body(request: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        **_structured_fields(request),
        "messages": [_wire_message(m) for m in request.messages],
        "temperature": request.temperature,
        "top_p": request.top_p,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
    }
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.top_k is not None:
        body["top_k"] = request.top_k  # not OpenAI's: vLLM, SGLang, llama.cpp take it
    if request.seed is not None:
        body["seed"] = request.seed
    if request.stop:
        body["stop"] = list(request.stop)
    return body


async def sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The data of each server-sent event of ``response``; comments and other
    fields (pings, ``event:``) are skipped."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


def json_event(data: str) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise Retry(f"the upstream sent an event that is not JSON: {data[:200]!r}") from exc
    if not isinstance(event, dict):
        raise Retry(f"the upstream sent an event that is not an object: {data[:200]!r}")
    return event


def json_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise Retry(f"the upstream answered {response.status_code} without JSON") from exc
    if not isinstance(body, dict):
        raise Retry(f"the upstream answered {response.status_code} with a non-object")
    return body


def feed_chunk(progress: ChatProgress, chunk: dict[str, Any]) -> None:
    """One ``chat.completion.chunk`` (or an error event) of a stream."""
    progress.events += 1
    if chunk.get("error") is not None or chunk.get("object") == "error":
        message, code, status = error_of(chunk)
        raise classify(status, message, code)
    if isinstance(chunk.get("usage"), dict):
        progress.usage = usage_of(chunk["usage"])
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str):
            progress.add_text(content)
        if choice.get("finish_reason"):
            progress.finish = str(choice["finish_reason"])


def feed_completion(progress: ChatProgress, body: dict[str, Any]) -> None:
    """A whole ``chat.completion`` (the answer to a request without streaming)."""
    progress.events += 1
    try:
        choice = body["choices"][0]
        content = choice["message"].get("content") or ""
        answers = [answer_of(c) for c in body["choices"]]
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise Retry(f"the upstream sent a malformed completion: {exc!r}") from exc
    progress.add_text(str(content))
    progress.finish = str(choice.get("finish_reason") or "stop")
    progress.answer = dataclasses.replace(answers[0], others=tuple(answers[1:]))
    if isinstance(body.get("usage"), dict):
        progress.usage = usage_of(body["usage"])


def usage_of(data: Any) -> Usage:
    if not isinstance(data, dict):
        return Usage()
    details = data.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    try:
        return Usage(
            prompt_tokens=int(data.get("prompt_tokens") or 0),
            completion_tokens=int(data.get("completion_tokens") or 0),
            cached_tokens=int(cached or 0),
        )
    except (TypeError, ValueError):
        return Usage()


def raise_for_status(response: httpx.Response, *, param: str | None = None) -> None:
    if not response.is_error:
        return
    try:
        body: Any = response.json()
    except ValueError:
        body = {"error": response.text[:500].strip() or response.reason_phrase}
    message, code, _ = error_of(body if isinstance(body, dict) else {"error": str(body)})
    raise classify(
        response.status_code, message, code, retry_after=retry_after_of(response), param=param
    )


def error_of(body: dict[str, Any]) -> tuple[str, str, int]:
    """(message, code, HTTP status) of an error body or event, in the shapes OpenAI,
    vLLM, TGI, llama.cpp, Ollama and FastAPI use; the status is guessed for an event."""
    error: Any = body.get("error", body)
    if isinstance(error, str):
        error = {"message": error, "type": body.get("error_type")}
    if not isinstance(error, dict):
        error = {"message": str(error)}
    message = error.get("message") or error.get("detail") or body.get("detail") or ""
    if not isinstance(message, str):
        message = json.dumps(message)
    code, kind = error.get("code"), str(error.get("type") or "")
    if isinstance(code, int):
        status = code
    elif "rate_limit" in kind or code == "rate_limit_exceeded":
        status = 429
    elif "invalid_request" in kind or kind in ("BadRequestError", "validation"):
        status = 400
    else:
        status = 500
    return message or "no message", str(code or kind), status


def classify(
    status: int,
    message: str,
    code: str,
    *,
    retry_after: float | None = None,
    param: str | None = None,
) -> Exception:
    """The error an upstream failure becomes: PromptTooLong, a retry, or EngineError."""
    context = code == "context_length_exceeded" or _CONTEXT_ERROR.search(message)
    if status in (400, 413, 422) and context:
        return PromptTooLong(message, param=param)
    if status in (408, 429) or status >= 500:
        return Retry(f"{status}: {message}", retry_after=retry_after)
    if status in (401, 403):
        return Retry(f"{status}: {message} (check the endpoint's api_key_env)", endpoint_down=True)
    return EngineError(f"the upstream server refused the request ({status}): {message}")


def retry_after_of(response: httpx.Response) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    headers = response.headers
    with contextlib.suppress(ValueError):
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
