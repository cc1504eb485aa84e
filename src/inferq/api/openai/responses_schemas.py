"""OpenAI's Responses API: the create body, its input items, and the response object.

A response is a core job (origin ``openai-responses``). What the client sent that the
job's :class:`~inferq.core.work.ChatRequest` does not carry (instructions, metadata,
``store``, ``background``, the conversation's items with their ids) is kept in the
job's ``inputs`` as a :class:`Record`, and the response object is rendered from the
job: its state, its result and that record.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inferq.api.chat import PositiveInt32
from inferq.api.openai import responses_tools as structured
from inferq.api.openai.metadata import check_metadata
from inferq.core.errors import InvalidRequest, NotFound
from inferq.core.ids import new_hex
from inferq.core.models import Job
from inferq.core.states import JobState
from inferq.core.structured import TokenLogprob
from inferq.core.work import ChatMessage, ChatRequest, ChatResult

#: the origin of a response's job: only such jobs are responses
ORIGIN = "openai-responses"
ID_PREFIX = "resp_"
#: roles an input message may have
INPUT_ROLES = frozenset({"user", "system", "developer", "assistant"})
#: content parts that carry text, by the role that may send them
TEXT_PARTS = frozenset({"input_text", "output_text"})
#: the ``include`` value that asks for the output tokens' log probabilities
LOGPROBS = "message.output_text.logprobs"
#: fields of OpenAI's body that change what is generated and that inferq does not do
UNSUPPORTED = ("conversation", "prompt", "reasoning")


class ResponseCreate(BaseModel):
    """The body of ``POST /v1/responses`` (unknown fields are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    max_output_tokens: PositiveInt32 | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stream: bool = False
    background: bool = False
    store: bool = True
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    text: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    #: alternatives reported with each output token's log probability (0 to 20)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    #: extra output: ``message.output_text.logprobs`` reports the tokens' log probabilities
    include: list[str] | None = None
    #: inferq extension: higher runs first within its class
    priority: int = 0
    #: inferq extension: seconds before a request that is not in the background times out
    timeout: float | None = Field(default=None, gt=0)

    def check(self) -> None:
        """OpenAI's rules across fields, each an InvalidRequest naming its field."""
        extra = self.model_extra or {}
        for name in UNSUPPORTED:
            value = extra.get(name)
            if isinstance(value, dict):  # {"effort": null} asks for nothing
                value = {k: v for k, v in value.items() if v is not None} or None
            if value is not None:
                raise InvalidRequest(f"{name}: is not supported by inferq", param=name)
        if self.background and not self.store:
            raise InvalidRequest("store: a background response must be stored", param="store")
        if self.input is None or self.input == "" or self.input == []:
            raise InvalidRequest("input: is required", param="input")
        check_metadata(self.metadata)


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """What a response keeps besides its ChatRequest (the job's ``inputs``)."""

    store: bool = True
    background: bool = False
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    previous_response_id: str | None = None
    text: dict[str, Any] = field(default_factory=lambda: {"format": {"type": "text"}})
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    top_logprobs: int | None = None
    #: every item the response was generated from: those of the responses it continues
    #: (their input and output), then its own input; each with its id
    items: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "response", **asdict(self)}

    @classmethod
    def of(cls, job: Job) -> Record:
        """The record a job keeps (defaults for a batch row, which keeps none)."""
        data = job.inputs or {}
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def new_item_id() -> str:
    return "msg_" + new_hex()


def response_id(job: Job) -> str:
    return ID_PREFIX + uuid.UUID(job.id).hex


def job_id_of(response_id: str) -> str:
    """The job id behind a response id; NotFound for an id inferq never gave out."""
    try:
        if not response_id.startswith(ID_PREFIX):
            raise ValueError(response_id)
        return str(uuid.UUID(hex=response_id.removeprefix(ID_PREFIX)))
    except ValueError:
        raise not_found(response_id) from None


def not_found(response_id: str, param: str | None = None) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param=param)


def output_item_id(job: Job) -> str:
    return "msg_" + uuid.UUID(job.id).hex


# -- input ------------------------------------------------------------------------------


def input_items(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request's ``input`` as stored items: messages with ids and typed text parts."""
    if isinstance(value, str):
        return [_message("user", [{"type": "input_text", "text": value}])]
    return [_item(raw, f"input.{n}") for n, raw in enumerate(value)]


def _item(raw: dict[str, Any], where: str) -> dict[str, Any]:
    kind = raw.get("type", "message")
    if kind in (structured.CALL, structured.CALL_OUTPUT):
        return structured.call_item(raw, where)
    if kind != "message":
        raise InvalidRequest(
            f"{where}.type: items of type {kind!r} are not supported; send messages, "
            "function calls and their outputs",
            param=f"{where}.type",
        )
    role = raw.get("role")
    if role not in INPUT_ROLES:
        raise InvalidRequest(
            f"{where}.role: {role!r} is not one of {', '.join(sorted(INPUT_ROLES))}",
            param=f"{where}.role",
        )
    content = raw.get("content")
    default = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        return _message(role, [{"type": default, "text": content}])
    if not isinstance(content, list) or not content:
        raise InvalidRequest(
            f"{where}.content: give a string or a non-empty list of parts",
            param=f"{where}.content",
        )
    parts = []
    for n, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        text = part.get("text") if isinstance(part, dict) else None
        if kind not in TEXT_PARTS or not isinstance(text, str):
            raise InvalidRequest(
                f"{where}.content.{n}: only text parts (input_text, output_text) are "
                f"supported, got {kind!r}",
                param=f"{where}.content.{n}.type",
            )
        parts.append({"type": kind, "text": text})
    return _message(role, parts)


def _message(role: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": new_item_id(),
        "type": "message",
        "role": role,
        "status": "completed",
        "content": content,
    }


def chat_request(body: ResponseCreate, items: list[dict[str, Any]]) -> ChatRequest:
    """The core request: the instructions as a system message, then every item."""
    messages = [ChatMessage("system", body.instructions)] if body.instructions else []
    messages += [structured.item_message(item) for item in items]
    functions = structured.tools(body.tools)
    return ChatRequest(
        messages=tuple(messages),
        max_tokens=body.max_output_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        response_format=structured.output_format(body.text),
        tools=functions,
        tool_choice=structured.tool_choice(body.tool_choice, bool(functions)),
        logprobs=LOGPROBS in (body.include or ()) or bool(body.top_logprobs),
        top_logprobs=body.top_logprobs or 0,
    )


#: the body's fields a response echoes as they came
ECHOED = (
    "store", "background", "instructions", "max_output_tokens", "temperature",
    "top_p", "previous_response_id", "parallel_tool_calls", "top_logprobs",
)  # fmt: skip


def record(body: ResponseCreate, items: list[dict[str, Any]]) -> Record:
    return Record(
        **{name: getattr(body, name) for name in ECHOED},
        metadata=dict(body.metadata or {}),
        text=body.text or {"format": {"type": "text"}},
        tools=list(body.tools or []),
        tool_choice=body.tool_choice or "auto",
        items=items,
    )


#: fields a batch line cannot have: a batch row neither streams nor continues a response
NOT_IN_BATCH = ("stream", "background", "previous_response_id")


def parse_response_row(body: dict[str, Any]) -> ChatRequest:
    """A batch line's body, as the request of its row; InvalidRequest naming the field
    (those of the body's own checks without the ``body.`` prefix)."""
    try:
        parsed = ResponseCreate.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in ("body", *first["loc"]))
        raise InvalidRequest(f"{param}: {first['msg']}", param=param) from exc
    for name in NOT_IN_BATCH:
        if body.get(name):
            raise InvalidRequest(f"body.{name}: is not available in a batch", param=f"body.{name}")
    parsed.check()
    return chat_request(parsed, input_items(parsed.input or ""))


# -- output -----------------------------------------------------------------------------

Status = Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]


def status_of(job: Job, rec: Record) -> Status:
    state = job.state
    if state is JobState.QUEUED and rec.background:
        return "queued"
    if state is JobState.SUCCEEDED:
        assert isinstance(job.result, ChatResult)
        return "incomplete" if job.result.finish_reason == "length" else "completed"
    if state in (JobState.FAILED, JobState.EXPIRED):
        return "failed"
    if state is JobState.CANCELLED:
        return "cancelled"
    return "in_progress"


def output_message(job: Job, text: str, status: str) -> dict[str, Any]:
    """The answer's message; its text part carries the tokens' log probabilities when the
    request asked for them."""
    logprobs: list[dict[str, Any]] = []
    if text and isinstance(job.result, ChatResult):
        logprobs = [
            {**_token(entry), "top_logprobs": [_token(top) for top in entry.top]}
            for entry in job.result.logprobs or ()
        ]
    return {
        "id": output_item_id(job),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [text_part(text, logprobs)],
    }


def _token(entry: TokenLogprob) -> dict[str, Any]:
    return {"token": entry.token, "bytes": list(entry.bytes), "logprob": entry.logprob}


def output_items(job: Job, status: str) -> list[dict[str, Any]]:
    """A finished job's output: its message (unless it only called), then its calls."""
    if not isinstance(job.result, ChatResult):
        return []
    calls = structured.call_items(job)
    text = job.result.text
    message = [output_message(job, text, status)] if text or not calls else []
    return message + calls


def text_part(text: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}


def render_usage(job: Job) -> dict[str, Any]:
    usage = job.usage
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def render_response(job: Job, *, status: Status | None = None) -> dict[str, Any]:
    """The response object of ``job``; ``status`` overrides the one of its state (the
    stream's first events describe the response as it was then)."""
    rec = Record.of(job)
    status = status or status_of(job, rec)
    output = output_items(job, status) if status in ("completed", "incomplete") else []
    error = None
    if status == "failed":
        message = job.error.message if job.error else f"the response ended {job.state.value}"
        error = {"code": "server_error", "message": message}
    ended = job.finished_at if status in ("completed", "incomplete") else None
    return {
        "id": response_id(job),
        "object": "response",
        "created_at": int(job.created_at),
        "status": status,
        "background": rec.background,
        "completed_at": None if ended is None else int(ended),
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": rec.instructions,
        "max_output_tokens": rec.max_output_tokens,
        "max_tool_calls": None,
        "model": job.model,
        "output": output,
        "parallel_tool_calls": rec.parallel_tool_calls,
        "previous_response_id": rec.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": rec.store,
        "temperature": 1.0 if rec.temperature is None else rec.temperature,
        "text": rec.text,
        "tool_choice": rec.tool_choice,
        "tools": rec.tools,
        "top_logprobs": rec.top_logprobs,
        "top_p": 1.0 if rec.top_p is None else rec.top_p,
        "truncation": "disabled",
        "usage": render_usage(job) if output else None,
        "user": None,
        "metadata": rec.metadata,
    }


def conversation(job: Job) -> list[dict[str, Any]]:
    """The items a response continuing ``job`` starts from: its items and its answer."""
    rec = Record.of(job)
    if job.state is not JobState.SUCCEEDED or not isinstance(job.result, ChatResult):
        raise InvalidRequest(
            f"previous_response_id: response {response_id(job)} has no output to continue "
            f"from (it is {status_of(job, rec)})",
            param="previous_response_id",
        )
    answer = output_items(job, "completed")
    for item in answer:
        if item["type"] == "message":
            item["content"] = [{"type": "output_text", "text": item["content"][0]["text"]}]
    return [*rec.items, *answer]
